#!/usr/bin/env bash
# Idempotent install of the parallel_ms stack into ./.venv.
#
#   scripts/install.sh [--wheelhouse DIR] [--from-source] [--no-apt]
#
# Phases (each logs its wall time):
#   1. system packages through apt (compilers, Open MPI, parallel HDF5, MUMPS, ScaLAPACK,
#      PT-Scotch, METIS, OpenBLAS, patchelf); skipped when all are installed.
#   2. the virtual environment .venv/ (Python 3.11); skipped when present.
#   3. the compiled stack: PETSc 3.26.0, petsc4py 3.26.0, mpi4py 4.1.2, h5py 3.16.0 (HDF5_MPI=ON),
#      libsupermesh 2026.3, firedrake 2026.10.0. From a wheelhouse when one is given
#      (--wheelhouse DIR or PARALLEL_MS_WHEELHOUSE=DIR), otherwise built from PyPI sources against
#      the system libraries of phase 1; the wheels built are kept in build/wheels/ (see
#      scripts/export-wheelhouse.sh).
#   4. torch 2.13.0 (TORCH_INDEX_URL=URL installs it from that wheel index instead, e.g. a CUDA
#      or CPU-only index; a torch wheel in the wheelhouse is taken first).
#   5. parallel_ms itself (editable) with its test tools.
# A stamp in .venv records what was installed; a rerun with the same inputs only checks imports.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
BUILD_WHEELS="$ROOT/build/wheels"
WHEELHOUSE="${PARALLEL_MS_WHEELHOUSE:-}"
FROM_SOURCE=0
DO_APT=1
TORCH_SPEC="torch==2.13.0"  # keep equal to the pin in pyproject.toml
TORCH_INDEX_URL="${TORCH_INDEX_URL:-}"

while [ $# -gt 0 ]; do
  case "$1" in
    --wheelhouse) WHEELHOUSE="$2"; shift 2 ;;
    --wheelhouse=*) WHEELHOUSE="${1#*=}"; shift ;;
    --from-source) FROM_SOURCE=1; shift ;;
    --no-apt) DO_APT=0; shift ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option '$1' (allowed: --wheelhouse DIR, --from-source, --no-apt)" >&2; exit 2 ;;
  esac
done
if [ "$FROM_SOURCE" = 1 ]; then WHEELHOUSE=""; fi
if [ -n "$WHEELHOUSE" ]; then
  [ -d "$WHEELHOUSE" ] || { echo "install.sh: wheelhouse '$WHEELHOUSE' is not a directory" >&2; exit 2; }
  WHEELHOUSE=$(cd "$WHEELHOUSE" && pwd)
fi

# Versions of the compiled stack (firedrake 2026.10.0 pins petsc4py==3.26.0).
STACK=(petsc==3.26.0 petsc4py==3.26.0 mpi4py==4.1.2 h5py==3.16.0 libsupermesh==2026.3 firedrake==2026.10.0)
APT_PACKAGES=(gcc g++ gfortran make bison flex pkg-config cmake libopenmpi-dev openmpi-bin
  libhdf5-openmpi-dev libmumps-ptscotch-dev libmumps-dev libscalapack-openmpi-dev libptscotch-dev
  libmetis-dev libopenblas-dev patchelf)
# Debian's own python3 needs its headers and venv module from apt (a pyenv/conda Python has them).
python3 -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
  2>/dev/null || APT_PACKAGES+=(python3-dev)
python3 -c 'import ensurepip' 2>/dev/null || APT_PACKAGES+=(python3-venv)
T_START=$(date +%s)
phase_start() { PHASE="$1"; T0=$(date +%s); echo "[install] $PHASE ..."; }
phase_end() { echo "[install] $PHASE: ${1:-done} in $(( $(date +%s) - T0 )) s"; }

# ---------------------------------------------------------------- 1. system packages
phase_start "system packages (apt)"
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  phase_end "all ${#APT_PACKAGES[@]} present"
elif [ "$DO_APT" = 0 ]; then
  echo "[install] missing system packages (--no-apt given): ${missing[*]}" >&2; exit 1
else
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${APT_PACKAGES[@]}"
  phase_end "installed ${missing[*]}"
fi

# Paths of the system libraries (known once phase 1 has run).
MULTIARCH=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
HDF5_INC=/usr/include/hdf5/openmpi
HDF5_LIB=/usr/lib/$MULTIARCH/hdf5/openmpi
PETSC_OPTS="--with-fortran-bindings=0 --with-cuda=0 --with-x=0 --with-strict-petscerrorcode
 --COPTFLAGS=-O3 --CXXOPTFLAGS=-O3 --FOPTFLAGS=-O3
 --with-hdf5-include=$HDF5_INC --with-hdf5-lib=[$HDF5_LIB/libhdf5.so,$HDF5_LIB/libhdf5_hl.so]
 --with-metis --with-mumps --with-scalapack-lib=-lscalapack-openmpi
 --with-ptscotch --with-ptscotch-include=/usr/include/scotch
 --with-ptscotch-lib=[-lptesmumps,-lptscotch,-lptscotcherr,-lesmumps,-lscotch,-lscotcherr]"

# ---------------------------------------------------------------- 2. virtual environment
phase_start "virtual environment"
if [ -x "$PY" ]; then
  phase_end "present"
else
  python3 -m venv "$VENV"
  phase_end "created $VENV"
fi

# The stamp: everything that decides what ends up in the venv.
STAMP="$VENV/.parallel_ms-install"
stamp_text() {
  printf '%s\n' "${STACK[@]}" "$TORCH_SPEC" "$TORCH_INDEX_URL"
  sha256sum "$ROOT/pyproject.toml" "$ROOT/scripts/install.sh" | cut -d' ' -f1
}
check_imports() {
  OMP_NUM_THREADS=1 "$PY" - <<'PYEOF'
import petsc4py, mpi4py, h5py, torch, firedrake, parallel_ms  # noqa: F401
assert h5py.get_config().mpi, "h5py was built without MPI"
PYEOF
}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_text)" ]; then
  phase_start "check of the installed stack"
  if check_imports; then
    phase_end "up to date"
    echo "[install] total $(( $(date +%s) - T_START )) s"
    exit 0
  fi
  phase_end "imports failed, reinstalling"
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
PIP=("$PY" -m pip install -q)

# ---------------------------------------------------------------- 3. compiled stack
phase_start "build tools"
"${PIP[@]}" --upgrade "pip>=24" setuptools wheel "cython>=3" numpy pkgconfig "pybind11>=2.12"
phase_end

export MPICC=/usr/bin/mpicc CC=/usr/bin/mpicc CXX=/usr/bin/mpicxx
export HDF5_MPI=ON HDF5_INCLUDEDIR="$HDF5_INC" HDF5_LIBDIR="$HDF5_LIB"
export PETSC_CONFIGURE_OPTIONS="$(echo $PETSC_OPTS)"
unset PETSC_DIR PETSC_ARCH

STACK_STAMP="$VENV/.parallel_ms-stack"
if [ -f "$STACK_STAMP" ] && [ "$(cat "$STACK_STAMP")" = "$(printf '%s\n' "${STACK[@]}")" ] \
   && OMP_NUM_THREADS=1 "$PY" -c "import petsc4py, mpi4py, h5py, firedrake" 2>/dev/null; then
  phase_start "compiled stack"
  phase_end "already installed (${STACK[*]})"
elif [ -n "$WHEELHOUSE" ]; then
  phase_start "compiled stack from wheelhouse $WHEELHOUSE"
  "${PIP[@]}" --find-links "$WHEELHOUSE" \
    --only-binary petsc,petsc4py,mpi4py,h5py,libsupermesh,firedrake "${STACK[@]}"
  phase_end
else
  # From source: each package becomes a wheel in build/wheels (reused by later runs and by
  # scripts/export-wheelhouse.sh), then is installed so the next one builds against it. Two
  # lanes run concurrently: PETSc -> petsc4py, and mpi4py -> h5py -> libsupermesh; pip installs
  # into the venv are serialised with a lock.
  mkdir -p "$BUILD_WHEELS"
  build_one() {  # build_one SPEC [pip wheel options...]
    local spec="$1"; shift
    local name="${spec%%==*}" version="${spec##*==}"
    if ! ls "$BUILD_WHEELS"/"${name//-/_}"-"$version"-*.whl >/dev/null 2>&1; then
      phase_start "build $spec from source"
      "$PY" -m pip wheel -q --no-deps --no-binary "$name" -w "$BUILD_WHEELS" "$@" "$spec"
      if [ "$name" = firedrake ]; then  # absolute RUNPATHs into this venv -> $ORIGIN-relative
        "$PY" "$ROOT/scripts/relocate_wheel.py" "$BUILD_WHEELS"/firedrake-"$version"-*.whl
      fi
      phase_end
    fi
    phase_start "install $spec"
    flock "$BUILD_WHEELS/.pip.lock" "${PIP[@]}" --find-links "$BUILD_WHEELS" --only-binary "$name" "$spec"
    phase_end
  }
  lane() {  # lane NAME SPEC... : build the specs in order, output prefixed with [NAME]
    local label="$1"; shift
    ( set -e; for spec in "$@"; do
        case "$spec" in
          petsc==*|mpi4py==*|libsupermesh==*) build_one "$spec" ;;
          *) build_one "$spec" --no-build-isolation ;;
        esac
      done ) > >(sed -u "s/^/[$label] /") 2>&1
  }
  phase_start "compiled stack from source (two lanes)"
  T_LANES=$T0
  lane petsc petsc==3.26.0 petsc4py==3.26.0 & lane_petsc=$!
  lane mpi mpi4py==4.1.2 h5py==3.16.0 libsupermesh==2026.3 & lane_mpi=$!
  wait "$lane_petsc"; wait "$lane_mpi"
  "${PIP[@]}" "firedrake-rtree>=2026.3.0" petsctools "rtree>=1.2"  # firedrake's build requirements
  # --no-cache-dir: a firedrake wheel from pip's cache was linked into another venv's paths
  build_one firedrake==2026.10.0 --no-build-isolation --no-cache-dir
  T0=$T_LANES; PHASE="compiled stack from source (two lanes)"; phase_end
fi
printf '%s\n' "${STACK[@]}" > "$STACK_STAMP"

# ---------------------------------------------------------------- 4. torch
phase_start "torch ($TORCH_SPEC)"
TORCH_FROM=()
[ -n "$WHEELHOUSE" ] && TORCH_FROM+=(--find-links "$WHEELHOUSE")
[ -n "$TORCH_INDEX_URL" ] && TORCH_FROM+=(--index-url "$TORCH_INDEX_URL")
"${PIP[@]}" "${TORCH_FROM[@]}" "$TORCH_SPEC"
phase_end

# ---------------------------------------------------------------- 5. parallel_ms
phase_start "parallel_ms (editable) and test tools"
"${PIP[@]}" --no-build-isolation -e "$ROOT[test]"
phase_end

phase_start "check of the installed stack"
check_imports
phase_end "imports ok"
stamp_text > "$STAMP"
echo "[install] total $(( $(date +%s) - T_START )) s"
