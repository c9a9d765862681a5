#!/usr/bin/env bash
# The GPU check: one script, under 9 minutes on one CUDA GPU, that prints a summary to
# paste into benchmarks/RESULTS.md ("GPU check"). What it runs:
#   1. the CUDA tests (pytest -m gpu) and the engine tests on the GPU's machine;
#   2. training speed of the Anatomy profiles' models on CUDA (images/s, fp32 vs
#      channels_last + bf16: benchmarks/bench_training_speed.py --device cuda);
#   3. `forgetlab run --device cuda` on a real split dataset, timed;
#   4. one analysis of the `paper` profile (reset: the naive two-task run at paper width
#      and epochs, then the rewinds), timed, on a real dataset.
#
# Data: $FORGETLAB_DATA, else ../shared/data, else .gpudata/ (carried to a machine that
# has no ../shared: `benchmarks/gpu_check.sh --prepare` copies Fashion-MNIST and MNIST
# there (42 MB) and git-ignores it; CIFAR-10 (178 MB) is too big to carry, so without it
# steps 3-4 run on split Fashion-MNIST, and the summary says which dataset ran).
# No install is needed where torch, numpy, scipy, scikit-learn, matplotlib, Pillow and tqdm
# are present: the script runs forgetlab from src/.
#
#   benchmarks/gpu_check.sh --prepare     # here, before sending the tree to a GPU machine
#   benchmarks/gpu_check.sh               # there (or anywhere with CUDA)
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare" ]; then
  mkdir -p .gpudata
  for d in fashion-mnist mnist; do cp -r "${FORGETLAB_DATA:-../shared/data}/$d" .gpudata/; done
  grep -qx '/.gpudata/' .git/info/exclude 2>/dev/null || echo '/.gpudata/' >> .git/info/exclude
  du -sh .gpudata
  exit 0
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
for candidate in "${FORGETLAB_DATA:-}" ../shared/data .gpudata; do
  if [ -n "$candidate" ] && [ -d "$candidate" ]; then DATA=$candidate; break; fi
done
DATA=${DATA:?no data folder: set FORGETLAB_DATA or run benchmarks/gpu_check.sh --prepare}
if [ -d "$DATA/cifar-10-batches-py" ]; then DATASET=cifar10; else DATASET=fashion-mnist; fi
STORE=$(mktemp -d)
SUMMARY=$(mktemp)
say() { echo "$*" | tee -a "$SUMMARY"; }
timed() {  # timed LABEL COMMAND...: run, print its tail, record its wall time and exit code
  local label=$1; shift
  local start=$SECONDS
  "$@" > "$STORE/out.log" 2>&1
  local rc=$?
  tail -n 25 "$STORE/out.log"
  say "- $label: exit $rc, $((SECONDS - start)) s"
  return 0
}
say "GPU check, $(date -u +%Y-%m-%d): $($PY -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO CUDA")' 2>&1)"
say "data: $DATA (dataset for steps 3-4: $DATASET)"
timed "CUDA tests (pytest -m gpu) + engine tests" \
  timeout 120 $PY -m pytest -q -p no:cacheprovider tests/engine/test_engine.py -m "gpu or not gpu"
grep -E "passed|failed" "$STORE/out.log" | tail -n 1 | sed 's/^/  /' >> "$SUMMARY"
timed "training speed on CUDA (bench_training_speed.py)" \
  timeout 180 $PY benchmarks/bench_training_speed.py --device cuda --models vgg:16:3,vgg:32:3,vgg:64:3,resnet:16:4 \
  --rounds 3 --seconds 1 --eval-batches 1000
grep -E "^\| (vgg|resnet)" "$STORE/out.log" | sed 's/^/  /' >> "$SUMMARY"
timed "forgetlab run --dataset $DATASET --device cuda (2 tasks, default model and epochs)" \
  timeout 120 $PY -m forgetlab run --dataset "$DATASET" --data-dir "$DATA" --device cuda --store "$STORE/run" --no-figures
grep -E "trained in|^ACC" "$STORE/out.log" | sed 's/^/  /' >> "$SUMMARY"
timed "paper profile, reset analysis, 1 seed, $DATASET, cuda" \
  timeout 300 $PY -m forgetlab reproduce anatomy --profile paper --dataset "$DATASET" --only reset --seeds 1 \
  --device cuda --data-dir "$DATA" --store "$STORE/paper" --quiet
grep -E "done in|finding|reset" "$STORE/out.log" | head -n 8 | sed 's/^/  /' >> "$SUMMARY"
echo
echo "==== summary (paste into benchmarks/RESULTS.md, 'GPU check') ===="
cat "$SUMMARY"
rm -rf "$STORE" "$SUMMARY"
