#!/usr/bin/env bash
# One process holding both halves (one GPU if there is one, else the CPU).
#   bash launch/emulate.sh experiment=quickstart
source "$(dirname "$0")/common.sh"
exec python -m split_alexnet.train mode=emulate run_dir="$RUN_DIR" "$@"
