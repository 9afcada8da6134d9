#!/bin/bash
# parallel_ms on a CPU cluster: one MPI rank per core.
#   sbatch jobs/slurm-cpu.sh jobs/paper-2d.toml [RUN_NAME] [--set KEY=VALUE ...]
#   LAUNCHER=mpirun sbatch jobs/slurm-cpu.sh ...        (mpirun instead of srun)
# Adjust the #SBATCH lines to your cluster (partition, account, nodes, time). See jobs/run-job.sh
# for resume, preemption and requeue.
#SBATCH --job-name=parallel_ms
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --cpus-per-task=1
#SBATCH --time=04:00:00
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=parallel_ms-%j.out
export PARALLEL_MS_DEVICE=cpu
source "${PARALLEL_MS_ROOT:-$SLURM_SUBMIT_DIR}/jobs/run-job.sh" "$@"
