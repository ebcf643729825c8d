# Sourced by the launch scripts. Picks the run directory once, here, before any
# process starts, so every rank (and every restart) writes into the same one.
set -euo pipefail
export HYDRA_FULL_ERROR=1
# Huge pages in PyTorch's CPU allocator: a fresh 50–150 MB activation otherwise
# costs ~20k page faults (docs/performance.md).
export THP_MEM_ALLOC_ENABLE="${THP_MEM_ALLOC_ENABLE:-1}"
RUN_DIR="${RUN_DIR:-runs/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$RUN_DIR"
echo "run directory: $RUN_DIR" >&2
# A deterministic error (a bad option, a missing data root, an unwritable cache) is said
# once, here, rather than retried by torchrun --max-restarts: preflight "$@" exits 2.
preflight() {
  python3 -m split_alexnet.train check_only=true mode=emulate run_dir="$RUN_DIR" "$@" >&2
}
