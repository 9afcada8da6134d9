# Sourced by scripts/run.sh and scripts/test.sh: the environment MPI runs need.
# One OpenMP thread per MPI rank (Firedrake asks for it; torch threads are set per rank).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# Open MPI refuses to start as root (containers, CI) unless told it may.
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# Launcher: MPIEXEC overrides (e.g. MPIEXEC="srun" inside an allocation).
MPIEXEC="${MPIEXEC:-mpiexec}"
