#!/usr/bin/env bash
# Several machines, GPUS_PER_NODE processes each (an even number: whole pairs),
# found through torchrun's c10d rendezvous at $MASTER_ADDR:$MASTER_PORT.
# Run the same command on every node with the same RUN_DIR (a shared file system):
#   NNODES=2 GPUS_PER_NODE=8 MASTER_ADDR=node0 RUN_DIR=/shared/runs/r1 \
#     bash launch/multinode.sh experiment=paper_imagenet data.root=/data/imagenet
# Ranks are numbered node by node, so with an even GPUS_PER_NODE every pair (ranks
# 2k, 2k+1: the "mp" row of the mesh) sits on one node and only the gradient
# all-reduce ("dp") crosses nodes.
: "${NNODES:?set NNODES}" "${MASTER_ADDR:?set MASTER_ADDR}"
: "${RUN_DIR:?set RUN_DIR to one directory on a file system every node shares}"
if (( ${GPUS_PER_NODE:-2} % 2 )); then
  echo "GPUS_PER_NODE=${GPUS_PER_NODE} is odd: a node must hold whole pairs" >&2
  exit 2
fi
source "$(dirname "$0")/common.sh"
preflight "$@"
exec torchrun --nnodes="$NNODES" --nproc_per_node="${GPUS_PER_NODE:-2}" \
  --rdzv_backend=c10d --rdzv_endpoint="$MASTER_ADDR:${MASTER_PORT:-29500}" \
  --rdzv_id="${RDZV_ID:-split_alexnet}" --max-restarts="${MAX_RESTARTS:-3}" \
  -m split_alexnet.train mode=distributed run_dir="$RUN_DIR" "$@"
