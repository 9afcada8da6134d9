#!/usr/bin/env bash
# Export the wheels a source build made (build/wheels/, relocatable) into a wheelhouse:
#   scripts/export-wheelhouse.sh DEST
# then, on another machine with the same OS, Python and MPI:  scripts/install.sh --wheelhouse DEST
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ $# -eq 1 ] || { echo "usage: scripts/export-wheelhouse.sh DEST" >&2; exit 2; }
shopt -s nullglob
wheels=("$ROOT"/build/wheels/*.whl)
[ ${#wheels[@]} -gt 0 ] || { echo "export-wheelhouse: no wheels in $ROOT/build/wheels; they are made by scripts/install.sh --from-source" >&2; exit 2; }
mkdir -p "$1"
cp -v "${wheels[@]}" "$1"/
echo "wheelhouse: $(cd "$1" && pwd) (install with: scripts/install.sh --wheelhouse $1)"
