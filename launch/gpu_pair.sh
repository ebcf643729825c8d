#!/usr/bin/env bash
# Two GPUs on one machine, one half each, joined by NCCL (chosen because CUDA is there).
#   bash launch/gpu_pair.sh experiment=paper_imagenet data.root=/data/imagenet
# PAIRS data-parallel pairs on 2·PAIRS GPUs, the global batch split over them:
#   PAIRS=4 bash launch/gpu_pair.sh experiment=paper_imagenet data.root=/data/imagenet
source "$(dirname "$0")/common.sh"
needed=$((2 * ${PAIRS:-1}))
visible=$(python3 -c "import torch; print(torch.cuda.device_count())")
if (( visible < needed )); then
  echo "gpu_pair.sh: $needed GPUs needed (PAIRS=${PAIRS:-1}, two per pair), $visible visible;" \
    "on CPUs use launch/cpu_pair.sh" >&2
  exit 2
fi
preflight "$@"
exec torchrun --standalone --nproc_per_node=$((2 * ${PAIRS:-1})) --max-restarts="${MAX_RESTARTS:-3}" \
  -m split_alexnet.train mode=distributed run_dir="$RUN_DIR" "$@"
