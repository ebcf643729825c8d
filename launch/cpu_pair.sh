#!/usr/bin/env bash
# Two CPU processes, one half each, joined by gloo: the paper's layout on any machine.
#   bash launch/cpu_pair.sh experiment=quickstart
#   RUN_DIR=runs/mine bash launch/cpu_pair.sh model=ungrouped seed=3
# One intra-op thread per process (two cores, two halves); override with threads=N.
# PAIRS=2 runs two data-parallel pairs (4 processes), the global batch split over them.
source "$(dirname "$0")/common.sh"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# CPU processes even where GPUs are: the layout picks NCCL and a GPU whenever CUDA is visible.
export CUDA_VISIBLE_DEVICES=""
preflight "$@"
exec torchrun --standalone --nproc_per_node=$((2 * ${PAIRS:-1})) --max-restarts="${MAX_RESTARTS:-0}" \
  -m split_alexnet.train mode=distributed run_dir="$RUN_DIR" "$@"
