# The body of the SLURM job scripts (sourced by jobs/slurm-cpu.sh and jobs/slurm-gpu.sh):
# start or resume a run, forward preemption to the ranks, requeue when preempted.
#
#   sbatch jobs/slurm-cpu.sh CONFIG.toml [RUN_NAME] [--set KEY=VALUE ...]
#
# - The run directory is $PARALLEL_MS_RUNS/RUN_NAME (default <repository>/runs/<config>-<jobid>).
#   If it holds a checkpoint (a requeued job), the run is resumed from it.
# - LAUNCHER=srun (default) or LAUNCHER=mpirun (Open MPI's mpirun inside the allocation).
# - Preemption: '#SBATCH --signal=B:USR1@120' makes SLURM signal this batch shell 120 s
#   before the time limit; the shell forwards USR1 to the launcher, which forwards it to every
#   rank; the ranks finish the step, checkpoint and exit 0; the job is then requeued
#   ('#SBATCH --requeue') and resumes when it starts again. A SIGTERM to the shell (scancel,
#   preemption by another job) is handled the same way.
# - The repository is $PARALLEL_MS_ROOT, else the directory sbatch was called from; its
#   scripts/install.sh must have run (the job does not install).
set -uo pipefail
ROOT=${PARALLEL_MS_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
source "$ROOT/scripts/env.sh"
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
CONFIG=${1:?usage: sbatch jobs/slurm-cpu.sh CONFIG.toml [RUN_NAME] [--set KEY=VALUE ...]}
shift
NAME=$(basename "$CONFIG" .toml)-${SLURM_JOB_ID:-local}
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then NAME=$1; shift; fi
DEVICE_ARGS=(); [ -n "${PARALLEL_MS_DEVICE:-}" ] && DEVICE_ARGS=(--set "parallel.device=$PARALLEL_MS_DEVICE")
RUNS=${PARALLEL_MS_RUNS:-$ROOT/runs}
RUN_DIR=$RUNS/$NAME
if [ -f "$RUN_DIR/checkpoint.h5" ]; then
  ARGS=(run --resume "$RUN_DIR" "${DEVICE_ARGS[@]}" "$@")
  echo "[job] resuming $RUN_DIR"
else
  ARGS=(run --config "$CONFIG" --set "output.root=$RUNS" --set "output.name=$NAME"
        "${DEVICE_ARGS[@]}" "$@")
fi
case "${LAUNCHER:-srun}" in
  srun) CMD=(srun --kill-on-bad-exit=1 "$PYTHON" -m parallel_ms "${ARGS[@]}") ;;
  mpirun) CMD=($MPIEXEC -n "${SLURM_NTASKS:-1}" "$PYTHON" -m parallel_ms "${ARGS[@]}") ;;
  *) echo "[job] LAUNCHER='$LAUNCHER' (allowed: srun, mpirun)" >&2; exit 2 ;;
esac
echo "[job] ${CMD[*]}"
PREEMPTED=0
forward() { PREEMPTED=1; echo "[job] preemption signal: forwarding USR1 to the ranks"; kill -USR1 "$PID" 2>/dev/null; }
trap forward USR1 TERM
"${CMD[@]}" &
PID=$!
while :; do
  wait "$PID"; STATUS=$?
  kill -0 "$PID" 2>/dev/null || break   # wait was interrupted by a trapped signal: wait again
done
# the run says how it ended in summary.json ("status": "preempted": checkpointed, not done)
if [ "$PREEMPTED" = 1 ] && [ "$STATUS" = 0 ] \
   && grep -q '"status": "preempted"' "$RUN_DIR/summary.json" 2>/dev/null; then
  echo "[job] checkpointed after preemption; requeueing job ${SLURM_JOB_ID:-?}"
  [ -n "${SLURM_JOB_ID:-}" ] && scontrol requeue "$SLURM_JOB_ID"
fi
exit "$STATUS"
