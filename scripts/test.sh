#!/usr/bin/env bash
# Install if needed (idempotent), then run the test suite: one serial pytest session and
# parallel sessions under mpiexec -n 2 and -n 3 (tests marked "mpi"). Extra arguments go to
# every pytest session (e.g. a test file, -x, -k EXPR). Tests marked "slow" are left to
# benchmarks/; RUN_SLOW=1 includes them.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/install.sh"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
export OMPI_MCA_rmaps_base_oversubscribe=1  # -n 3 on a 2-core machine (Open MPI)
SELECT="not slow"; [ "${RUN_SLOW:-0}" = 1 ] && SELECT=""
session() {  # session LABEL [launcher...] -- marker expression
  local label="$1" marks="$2"; shift 2
  echo "=== tests: $label"
  local rc=0
  "$@" "$PY" -m pytest --with-mpi -m "$marks" "${PYTEST_ARGS[@]}" || rc=$?
  # 5 = nothing selected (a filter given on the command line may select no parallel test)
  if [ "$rc" != 0 ] && [ "$rc" != 5 ]; then echo "=== tests: $label FAILED (status $rc)"; exit "$rc"; fi
}
PYTEST_ARGS=("$@")
session "serial" "${SELECT:-mpi or not mpi}"
session "mpiexec -n 2" "mpi${SELECT:+ and $SELECT}" $MPIEXEC -n 2
session "mpiexec -n 3" "mpi${SELECT:+ and $SELECT}" $MPIEXEC -n 3
echo "=== tests: all sessions passed"
