#!/bin/bash
# The GPU path end to end, in one short call on a lent CUDA machine (at most 10 minutes), every stage capped
# so that one slow stage cannot eat the others:
#   1. decoding with the KV cache and batched patching on CUDA (bench/decode_speed.py, bench/patch_sweep.py)
#   2. build the GPU-scale smoke artefacts (configs/embedded_gpu_smoke.yaml), render their dense world, train a
#      sem-vq mixed LoRA run on CUDA in bf16 and evaluate it (both tasks, the grid PNG)
#   3. training throughput and MFU at GPU scale against the bf16 matmul peak (bench/train_speed.py)
#   4. the test suite with CUDA visible (the tests pick the device automatically)
# Usage: bash bench/gpu_check.sh OUT_FOLDER (it writes gpu_check.log, stages.csv and the run's training log, the
# evaluation's summary.csv and its grid PNG there: few files, as a device call brings back at most 8). Where the
# image lacks this project's pins, carry wheels in .whl/ (the device tool's README says how); they are installed to
# /tmp/site first. The device tool sends the whole working tree (at most 64 MiB): move docs/results/ (about 58 MB)
# out of the checkout for the call and back after it. Override the configs (EMBEDDED_CONFIG,
# DATA_CONFIG, TRAIN_CONFIG) and sizes (EVAL_LIMIT, BENCH_STEPS, CAP_SCALE) to dry-run it on a CPU;
# STAGES names the stages to run (all by default).
set -u
out=${1:?usage: bash bench/gpu_check.sh OUT_FOLDER}
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
EMBEDDED_CONFIG=${EMBEDDED_CONFIG:-configs/embedded_gpu_smoke.yaml}
DATA_CONFIG=${DATA_CONFIG:-configs/data/gpu/dense_224_smoke.yaml}
TRAIN_CONFIG=${TRAIN_CONFIG:-configs/train/gpu/dense-sem-vq-lora-smoke.yaml}
EVAL_LIMIT=${EVAL_LIMIT:-64}
BENCH_STEPS=${BENCH_STEPS:-10}
CAP_SCALE=${CAP_SCALE:-1}
STAGES=${STAGES:-decode_embedded decode_gpu_size patch_sweep build data train eval train_speed pytest}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PWD:/tmp/site"
fi
unilens() { python3 -c 'import sys; from unilens.cli import main; sys.exit(main())' "$@"; }
stage() {  # stage NAME CAP_SECONDS COMMAND...: run capped, log its output and its exit status and wall time
  local name=$1 cap=$(( $2 * CAP_SCALE )); shift 2
  [[ " $STAGES " == *" $name "* ]] || return 0
  local start=$SECONDS
  echo "=== $name (cap ${cap} s): $*"
  timeout "$cap" "$@" 2>&1
  local rc=$?
  echo "=== $name: exit $rc after $(( SECONDS - start )) s"
  echo "$name,$rc,$(( SECONDS - start ))" >> "$out/stages.csv"
}
echo "stage,exit,seconds" > "$out/stages.csv"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c 'import torch, transformers, peft; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
  "transformers", transformers.__version__, "peft", peft.__version__)'

stage decode_embedded 30 python3 bench/decode_speed.py
stage decode_gpu_size 30 python3 bench/decode_speed.py --size gpu
stage patch_sweep 40 python3 bench/patch_sweep.py --size 100M
stage build 110 unilens embedded build "$EMBEDDED_CONFIG" --quiet
{ read -r root; read -r run; } < <(python3 -c "import yaml, sys; c = yaml.safe_load(open(sys.argv[1]))
print(c['dataset']); print(c['out'])" "$TRAIN_CONFIG")
echo "train config $TRAIN_CONFIG: dataset $root, run $run"
stage data 40 unilens data make "$DATA_CONFIG" --out "$root" --quiet
stage train 80 unilens train "$TRAIN_CONFIG" --quiet
stage eval 100 unilens eval "$run" --checkpoints last --no-captions --limit "$EVAL_LIMIT" --out "$run/eval"
cp "$run"/log.jsonl "$out"/train_log.jsonl 2>/dev/null
[[ " $STAGES " == *" eval "* ]] && cp "$run"/eval/summary.csv "$run"/eval/grid_step-*.png "$out"/
stage train_speed 75 python3 bench/train_speed.py "$TRAIN_CONFIG" --steps "$BENCH_STEPS" --matmul 8192
stage pytest 90 python3 -m pytest -q -p no:cacheprovider ${PYTEST_WORKERS:--n 8} \
  --ignore tests/test_notebooks.py --deselect tests/test_probes.py::test_transformer_lens_bridge_matches_our_cache
cat "$out/stages.csv"
