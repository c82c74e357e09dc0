#!/usr/bin/env bash
# The device checks, in one go, for a machine with a CUDA GPU (~3-5 minutes on an H200; at most ~14: the step limits).
#
#   bash scripts/gpu_check.sh [OUT_DIR]
#
# Uses the python3 that holds a CUDA build of torch (no virtual environment: GPU machines bring
# their own torch) and runs actlab from src/. Steps, each with its own time limit so one stuck
# step cannot eat the others' time:
#   1. the device and torch build;
#   2. tests/cuda (the zoo, the fused kernels in eager / compiled (Triton) / auto mode, bf16,
#      surgery, training in float32 and bf16 autocast, probes, against the float64 formula;
#      the sparsity methods' calibration, tuning and decoding against the same on the CPU);
#   3. the layer registry's test matrix on CUDA (tests/layers/test_layer_matrix.py -k cuda);
#   4. benchmarks/bench_layers.py on CUDA: step time and peak memory of the structured layers
#      vs what they replace (and the width sweep), at the default 64 x 17 tokens (launch-bound
#      on a large GPU) and at 1024 x 17;
#   5. benchmarks/bench_activations.py on CUDA: fwd+bwd time vs F.gelu and saved bytes for the
#      fused activations, in auto / compiled / eager mode, at 4M and 16M elements;
#   6. benchmarks/fused_variants.py --profile: device vs host time of a fused activation's
#      step, and ways of compiling it;
#   7. benchmarks/bench_train.py --device cuda --quick: the activation's share of a ViT step,
#      eager and with the whole model under torch.compile (--compile-model).
# Logs go to OUT_DIR (default: $OUT if set, else ./gpu-check), one file per step, and a
# summary line per step to OUT_DIR/summary.txt. The exit status is that of the tests (2, 3).
set -u
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu-check}}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"
summary="$out/summary.txt"
: > "$summary"

step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "$name: rc=$rc in $((SECONDS - t0)) s" | tee -a "$summary"
  return $rc
}

if ! step device 60 "$py" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"; then
  echo "gpu_check: no usable CUDA device (see $out/device.log); this script is for a GPU machine" >&2
  exit 2
fi
step tests 200 "$py" -m pytest -q -rs -p no:cacheprovider tests/cuda
tests_rc=$?
step layers 80 "$py" -m pytest -q -rs -p no:cacheprovider tests/layers/test_layer_matrix.py -k cuda
layers_rc=$?
step bench_layers 150 bash -c "'$py' benchmarks/bench_layers.py --device cuda --repeats 20 \
  --groups transformer,fit,attention,norm,width --widths 64,256,1024 && \
  '$py' benchmarks/bench_layers.py --device cuda --repeats 20 --batch 1024 \
  --groups transformer,attention,width --widths 256,1024"
step bench_activations 80 "$py" benchmarks/bench_activations.py --device cuda --numel 4000000,16777216 \
  --repeats 30 --only crrelu,eafo,swish,polyrelu,relu2,mish,silu --modes auto,compiled,eager
step fused_variants 120 "$py" benchmarks/fused_variants.py --device cuda --numel 16777216 \
  --repeats 20 --profile
step bench_train 240 bash -c "'$py' benchmarks/bench_train.py --device cuda --quick && \
  '$py' benchmarks/bench_train.py --device cuda --quick --presets vit_mini_28 --compile-model"
tail -n 5 "$out/tests.log" "$out/layers.log" >> "$summary"
[ "$tests_rc" -ne 0 ] && exit "$tests_rc"
exit "$layers_rc"
