#!/usr/bin/env bash
# The Figure 3 protocol (issue 16), a scaled experiment (conf/experiment/figure3.yaml:
# 112-pixel input, 18 photo classes half of them grey, a constant ε, 10,000 steps):
#   - the paper's grouped net, one run per seed in SEEDS;
#   - its ungrouped twin (model=ungrouped: conv1 starts from the very same weights)
#     and the grey-input control (R = G = B), one of each per seed in CONTROL_SEEDS;
# JOBS runs at a time, one thread each (each run appends to $OUT/<run>.log: a resumed
# run keeps its first life's log); then the Figure 3 tool on every run's last
# checkpoint and the protocol's table and S-against-steps plot (analysis/protocol.py).
#   bash launch/figure3_experiment.sh                # 5 runs, about 1 h each on one core
#   SEEDS=0 JOBS=1 bash launch/figure3_experiment.sh max_steps=200   # a quick look
#   LAYOUT=pair bash launch/figure3_experiment.sh    # each run as a gloo pair
# Started again with the same OUT, every run continues from its last checkpoint.
# Extra arguments are Hydra overrides for every run (e.g. optim.lr=0.00125).
set -euo pipefail
export HYDRA_FULL_ERROR=1
OUT="${OUT:-runs/figure3-protocol}"
SEEDS="${SEEDS:-0 1 2}"
CONTROL_SEEDS="${CONTROL_SEEDS:-${SEEDS%% *}}"
JOBS="${JOBS:-2}"
here="$(dirname "$0")"

run() {  # name, then the run's own overrides; its output goes to $OUT/name.log
  local name="$1"; shift
  if [ "${LAYOUT:-emulate}" = pair ]; then
    RUN_DIR="$OUT/$name" bash "$here/cpu_pair.sh" experiment=figure3 "$@"
  else
    python -m split_alexnet.train mode=emulate experiment=figure3 run_dir="$OUT/$name" "$@"
  fi >> "$OUT/$name.log" 2>&1 || { echo "run $name failed: see $OUT/$name.log" >&2; return 1; }
}

mkdir -p "$OUT"
runs=() grouped=() controls=()
for seed in $SEEDS; do
  runs+=("paper-seed$seed model=paper seed=$seed"); grouped+=("$OUT/paper-seed$seed")
done
for seed in $CONTROL_SEEDS; do
  runs+=("ungrouped-seed$seed model=ungrouped seed=$seed"); controls+=("$OUT/ungrouped-seed$seed")
  runs+=("grey-seed$seed model=paper data.grey=true seed=$seed")
done
echo "$((${#runs[@]})) runs, $JOBS at a time, in $OUT (each logs to $OUT/<run>.log)" >&2
failed=0
for spec in "${runs[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || failed=1; done
  # shellcheck disable=SC2086  # the spec is a name and whitespace-free overrides
  run $spec "$@" &
done
while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || failed=1; done
[ "$failed" = 0 ] || { echo "a run failed: not comparing" >&2; exit 1; }

list() { local IFS=,; echo "[$*]"; }
python -m split_alexnet.analysis.figure3 "checkpoints=$(list "${grouped[@]}")" \
  "controls=$(list "${controls[@]}")" out_dir="$OUT/figure3" > "$OUT/figure3.log" 2>&1
for seed in $CONTROL_SEEDS; do
  python -m split_alexnet.analysis.figure3 "checkpoints=[$OUT/grey-seed$seed]" \
    out_dir="$OUT/figure3-grey-seed$seed" >> "$OUT/figure3.log" 2>&1
done
python -m split_alexnet.analysis.protocol "$OUT"
echo "Figure 3 protocol: $OUT/protocol.md, $OUT/separation_by_step.png, $OUT/figure3*/" >&2
