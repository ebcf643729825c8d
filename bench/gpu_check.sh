#!/usr/bin/env bash
# The project's GPU check (issue 12): one script, nothing but the repository, a PASS/FAIL
# table at the end (its first five checks took 222 s on one H200; the kernel profile and
# the input pipeline came later, each under 150 s by its limit). Run from anywhere:
#   bash bench/gpu_check.sh                 # results and logs in $OUT (default gpu-check/)
# Where hydra-core or omegaconf are missing (a bare GPU image), wheels in .whl/ are
# installed first: pip download --no-deps -d .whl hydra-core omegaconf antlr4-python3-runtime==4.9.3
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-check}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" HYDRA_FULL_ERROR=1
PY="${PYTHON:-python3}"
if ! "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
  echo "gpu_check.sh: no CUDA device here (the CUDA tests would only be skipped)" >&2
  exit 2
fi
if ! "$PY" -c "import hydra, omegaconf" 2>/dev/null; then
  "$PY" -m pip install --quiet --no-index --find-links .whl hydra-core omegaconf
fi
# conf/ installs as split_alexnet.conf; without pip install, a link in src/ stands for it.
[ -e src/split_alexnet/conf ] || ln -s ../../conf src/split_alexnet/conf

rows=()
check() {  # check NAME LIMIT_S COMMAND...: one row of the table, the log in $OUT/NAME.log
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  if timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; then
    rows+=("| $name | PASS | $((SECONDS - start)) s |")
  else
    rows+=("| $name | FAIL (exit $?, $OUT/$name.log) | $((SECONDS - start)) s |")
  fi
}

"$PY" -c "import torch; print(torch.cuda.get_device_name(), 'torch', torch.__version__)" \
  > "$OUT/device.txt" 2>&1
check cuda-tests 240 "$PY" -m pytest -q -m cuda tests/test_cuda.py tests/test_lrn.py
RUN="$OUT/run"
rm -rf "$RUN"
check train-50-steps 180 "$PY" -m split_alexnet.train mode=emulate seed=0 max_steps=50 \
  data.batch_size=32 compile_lrn=true filters_every_epoch=false run_dir="$RUN"
check export-on-cpu 60 env CUDA_VISIBLE_DEVICES= "$PY" -m split_alexnet.export \
  checkpoint="$RUN" out="$OUT/weights.pt"
check figure3-on-cpu 60 env CUDA_VISIBLE_DEVICES= "$PY" -m split_alexnet.analysis.figure3 \
  "checkpoints=[$RUN]" permutations=1000 out_dir="$OUT/figure3"
check step-bench 240 "$PY" bench/bench_gpu_step.py --batches 128,256 --reps 5
check kernel-profile 150 "$PY" bench/bench_gpu_step.py --batches 128 --profile 20
check data-into-gpu 150 "$PY" bench/bench_data.py --work /tmp/split_alexnet_bench

echo
cat "$OUT/device.txt"
echo "| check | result | time |"
echo "|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "step bench ($OUT/step-bench.log):"
grep '^|' "$OUT/step-bench.log" || true
echo "kernel profile ($OUT/kernel-profile.log):"
grep 'kernels and copies' "$OUT/kernel-profile.log" || true
echo "input pipeline ($OUT/data-into-gpu.log):"
grep 'images/s' "$OUT/data-into-gpu.log" || true
! printf '%s\n' "${rows[@]}" | grep -q FAIL
