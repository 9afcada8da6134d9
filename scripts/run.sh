#!/usr/bin/env bash
# Install if needed (idempotent, seconds when done), then run parallel_ms on NP ranks (default 2):
#   scripts/run.sh [parallel_ms arguments...]        e.g. NP=4 scripts/run.sh info
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/install.sh"
source "$ROOT/scripts/env.sh"
exec $MPIEXEC -n "${NP:-2}" "$ROOT/.venv/bin/python" -m parallel_ms "$@"
