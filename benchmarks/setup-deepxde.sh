#!/usr/bin/env bash
# A separate environment for the DeepXDE peer in benchmarks/step_cost.py (its worker
# benchmarks/deepxde_step.py), so that DeepXDE and its dependencies never touch the project's
# .venv:
#   benchmarks/setup-deepxde.sh        -> benchmarks/.venv-deepxde (DeepXDE 1.15.0, torch 2.13.0)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV=${DEEPXDE_VENV:-$HERE/.venv-deepxde}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q "deepxde==1.15.0" "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
echo "DeepXDE environment: $VENV"
