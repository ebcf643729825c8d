# Sourced by the launch scripts. Picks the run directory once, here, before any
# process starts, so every rank (and every restart) writes into the same one.
set -euo pipefail
export HYDRA_FULL_ERROR=1
RUN_DIR="${RUN_DIR:-runs/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$RUN_DIR"
echo "run directory: $RUN_DIR" >&2
