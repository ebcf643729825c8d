#!/usr/bin/env bash
# The Figure 3 experiment: several seeds of the paper's grouped network and of the
# ungrouped control (conv2/4/5 read both halves) on the embedded photo set, then
# the colour comparison of their conv1 halves (split-alexnet-figure3).
#   SEEDS="0 1 2" EPOCHS=15 bash launch/figure3_experiment.sh
#   LAYOUT=pair bash launch/figure3_experiment.sh      # each run as a gloo pair
# Extra arguments are Hydra overrides for every run (e.g. data.batch_size=64).
set -euo pipefail
export HYDRA_FULL_ERROR=1
OUT="${OUT:-runs/figure3-$(date +%Y%m%d-%H%M%S)}"
SEEDS="${SEEDS:-0 1 2}"
EPOCHS="${EPOCHS:-15}"
list() { local IFS=,; echo "[$*]"; }
grouped=() controls=()
for seed in $SEEDS; do
  for model in paper ungrouped; do
    run="$OUT/$model-seed$seed"
    if [ "${LAYOUT:-emulate}" = pair ]; then
      RUN_DIR="$run" bash "$(dirname "$0")/cpu_pair.sh" experiment=figure3 model="$model" \
        seed="$seed" epochs="$EPOCHS" "$@"
    else
      python -m split_alexnet.train mode=emulate experiment=figure3 model="$model" \
        seed="$seed" epochs="$EPOCHS" run_dir="$run" "$@"
    fi
    if [ "$model" = paper ]; then grouped+=("$run"); else controls+=("$run"); fi
  done
done
first="$OUT/paper-seed${SEEDS%% *}/checkpoints"
mapfile -t epochs < <(ls "$first"/run-step*.pt | sort)
python -m split_alexnet.analysis.figure3 "checkpoints=$(list "${grouped[@]}")" \
  "controls=$(list "${controls[@]}")" "epochs=$(list "${epochs[@]}")" out_dir="$OUT/figure3"
echo "Figure 3 comparison: $OUT/figure3/figure3.json and its PNGs" >&2
