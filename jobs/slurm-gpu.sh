#!/bin/bash
# parallel_ms on a GPU cluster: one MPI rank per GPU (NCCL for the gradient all-reduce; each
# rank uses the GPU of its node-local rank).
#   sbatch jobs/slurm-gpu.sh jobs/paper-2d.toml [RUN_NAME] [--set KEY=VALUE ...]
#   LAUNCHER=mpirun sbatch jobs/slurm-gpu.sh ...        (mpirun instead of srun)
# Needs a CUDA build of torch (README: "GPU clusters"). Adjust the #SBATCH lines to your
# cluster. See jobs/run-job.sh for resume, preemption and requeue.
#SBATCH --job-name=parallel_ms-gpu
#SBATCH --nodes=1
#SBATCH --gpus-per-node=4
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=parallel_ms-gpu-%j.out
export PARALLEL_MS_DEVICE=cuda
source "${PARALLEL_MS_ROOT:-$SLURM_SUBMIT_DIR}/jobs/run-job.sh" "$@"
