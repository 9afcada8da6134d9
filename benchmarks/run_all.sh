#!/usr/bin/env bash
# Every benchmark at reduced settings, one after another (15 min 36 s on a 2-core machine):
# the step-cost tables (1 and 2 ranks, DeepXDE beside), parallel scaling, coarse solves against
# their size, every accuracy table of benchmarks/reproduce.py at its `quick` scale, and the
# error estimate against the true error on one 1D run.
#
#   benchmarks/run_all.sh [OUT_DIR]        tables to stdout, JSON to OUT_DIR (runs/benchmarks)
#
# PYTHON (default .venv/bin/python) and MPIEXEC (default mpiexec) select the interpreter and
# launcher. The settings of the results page (docs/results.md) are larger: the command above
# each of its tables gives them.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
MPIEXEC=${MPIEXEC:-mpiexec}
OUT=$(mkdir -p "${1:-$ROOT/runs/benchmarks}" && cd "${1:-$ROOT/runs/benchmarks}" && pwd)
export OMP_NUM_THREADS=1
cd "$ROOT"
start=$SECONDS
section() { printf '\n=== %s (%d s so far)\n' "$1" $((SECONDS - start)); }

section "DeepXDE environment (benchmarks/setup-deepxde.sh, from PyPI)"
bash benchmarks/setup-deepxde.sh \
  || echo "DeepXDE environment not available: step_cost.py prints no DeepXDE row"
section "step cost, 1 rank (benchmarks/step_cost.py)"
"$PY" benchmarks/step_cost.py --points 5000 --steps 5 --json "$OUT/step_cost.json"
section "step cost, 2 ranks"
"$MPIEXEC" -n 2 "$PY" benchmarks/step_cost.py --points 5000 --steps 5 --no-peer \
  --json "$OUT/step_cost_2ranks.json"
section "parallel scaling (benchmarks/scaling.py)"
"$PY" benchmarks/scaling.py --ranks 1 2 --points 5000 --steps 5 --json "$OUT/scaling.json"
section "coarse solves, 1 rank (benchmarks/coarse_solve.py)"
"$PY" benchmarks/coarse_solve.py --json "$OUT/coarse_solve.json"
section "coarse solves, 2 ranks"
"$MPIEXEC" -n 2 "$PY" benchmarks/coarse_solve.py --json "$OUT/coarse_solve_2ranks.json"
section "accuracy tables, quick scale (benchmarks/reproduce.py)"
"$PY" benchmarks/reproduce.py --scale quick --seeds 0 1 --root "$OUT/reproduce" \
  --json "$OUT/reproduce.json"
section "error estimate against the true error, 1D (benchmarks/error_estimate.py)"
"$PY" benchmarks/error_estimate.py --cases paper-1d-eps1_15 --methods pinn --seeds 0 \
  --ranks 2 --json "$OUT/error_estimate.json"
section "done"
