#!/usr/bin/env bash
# Multi-node training under SLURM: one task per GPU; Lightning reads SLURM's environment.
#   sbatch --nodes 32 scripts/slurm_train.sh --config configs/model/paper.yaml --config configs/train/paper.yaml
# Requeue-safe: --ckpt_path last resumes from <default_root_dir>/checkpoints/last.ckpt when present.
#SBATCH --job-name=dexwm
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=10
#SBATCH --time=72:00:00
#SBATCH --requeue
#SBATCH --signal=SIGUSR1@90
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
srun .venv/bin/python train.py fit --trainer.num_nodes "${SLURM_NNODES:-1}" \
    --trainer.devices "${SLURM_NTASKS_PER_NODE:-8}" --ckpt_path last "$@"
