#!/usr/bin/env bash
# Multi-node training with torchrun (run this same command on every node).
#   NNODES=4 NODE_RANK=0 MASTER_ADDR=node0 GPUS=8 bash scripts/torchrun_train.sh \
#       --config configs/model/paper.yaml --config configs/train/paper.yaml
# Extra arguments go to train.py. Lightning reads torchrun's environment (RANK, WORLD_SIZE, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
NNODES=${NNODES:-1}
GPUS=${GPUS:-8}
exec torchrun --nnodes "$NNODES" --nproc_per_node "$GPUS" --node_rank "${NODE_RANK:-0}" \
    --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "${MASTER_PORT:-29500}" \
    train.py fit --trainer.num_nodes "$NNODES" --trainer.devices "$GPUS" "$@"
