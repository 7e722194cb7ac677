#!/bin/sh
# The GPU checks, one script for a lent GPU machine (at most 8 minutes on an H200): the CUDA tests,
# then each GPU figure as a ratio against PyTorch in Python on the same machine in the same run.
#   make gpu-check                       (here: builds build/gpu-check: the GPU bundle, the CUDA
#                                         test programs and the benchmark programs)
#   bench/gpu/check.sh build/gpu-check   (there, with PyTorch 2.11 in QL_PYTHON or /opt/torch/.venv)
# QL_GPU_CHECK_DEVICE=cpu runs the same script on the CPU, small, to check the script itself.
set -u
check=$(cd "$1" && pwd)
source_dir=$(cd "$(dirname "$0")/../.." && pwd)
device=${QL_GPU_CHECK_DEVICE:-cuda}
for candidate in "${QL_PYTHON:-}" /opt/torch/.venv/bin/python "$source_dir/.venv/bin/python" python3; do
  if [ -n "$candidate" ] && "$candidate" -c "import torch" 2>/dev/null; then python=$candidate; break; fi
done
torch=$("$python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
libraries="$check/bundle/lib:$torch/lib"
for cuda in "$torch"/../nvidia/*/lib; do [ -d "$cuda" ] && libraries="$libraries:$cuda"; done
export LD_LIBRARY_PATH="$libraries" QL_PYTHON="$python"
export QL_TEST_QLHOST="$check/bundle/bin/qlhost" QL_BENCH_PLUGIN_DIR="$check/bundle/lib/quantlab/plugins"
# The bundle was copied onto the lent machine by its file transfer, which may leave the files
# owned by another user id than the one running this: they are ours, so load them anyway.
export QL_ALLOW_WRITABLE_PLUGINS=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
threads=$(nproc)
failures=0
section() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }
ratio() { awk "BEGIN {printf \"%.3f\", $1 / $2}"; }
# Runs a command with a time limit; a failure is counted and printed, and the script goes on.
step() {
  limit=$1; shift
  timeout "$limit" "$@" > "$work/step.log" 2>&1
  code=$?
  if [ $code -ne 0 ]; then
    failures=$((failures + 1))
    { echo "FAILED (exit $code): $*"; tail -20 "$work/step.log"; } >&2
    return 1
  fi
  cat "$work/step.log"
}
qlhost=$check/bundle/bin/qlhost

section "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
"$python" -c "import torch; print('python torch', torch.__version__, 'CUDA', torch.version.cuda, 'GPUs', torch.cuda.device_count())"
"$qlhost" --version

section "CUDA tests"
for test in cuda_test greedy_test nuqsgd_test; do
  step 240 "$check/tests/$test" --gtest_filter='CudaTest.*:*OnTheGpu*:*AGpuGradient*' > /dev/null
  grep -E '^\[  (PASSED|SKIPPED|FAILED) ' "$work/step.log" || tail -20 "$work/step.log"
done

section "CIFAR ResNet-20 training, synthetic CIFAR-shaped data, batch 128 (images/s of the last of 3 epochs)"
if [ "$device" = cuda ]; then per_file=10000; else per_file=400; fi
"$python" "$source_dir/bench/gpu/make_data.py" cifar "$work/cifar" "$per_file"
cat > "$work/resnet20.toml" <<TOML
[storage]
logs = "$work/logs"
[problem]
plugin = "cifar10"
data_dir = "$work/cifar"
[topology]
plugin = "resnet"
depth = 20
[training]
epochs = 3
batch_size = 128
valid_fraction = 0.0
[training.optimizer]
name = "sgd"
lr = 0.1
momentum = 0.9
weight_decay = 1e-4
[run]
device = "$device"
TOML
if step 300 "$qlhost" run "$work/resnet20.toml" > /dev/null; then
  ours=$(grep -o '[0-9]* img/s' "$work/step.log" | tail -1 | cut -d' ' -f1)
  if step 300 "$python" "$source_dir/bench/gpu/train_resnet20.py" "$work/cifar" 3 8 "$device" > /dev/null; then
    theirs=$(tail -n 1 "$work/step.log" | cut -d' ' -f2)
    echo "| ResNet-20 training | QuantLab $ours img/s | PyTorch $theirs img/s | ratio $(ratio "$ours" "$theirs") (target >= 1.0) |"
  fi
fi

section "VGG-16 224x224 forward+backward, batch 64 (images/s)"
if [ "$device" = cuda ]; then batch=64; iterations=20; precisions="fp32 bf16"; else batch=2; iterations=1; precisions=fp32; fi
for precision in $precisions; do
  step 120 "$check/bench/forward_backward" vgg16 $batch $iterations "$threads" "$device" $precision > /dev/null || continue
  ours=$(tail -n 1 "$work/step.log" | cut -d' ' -f2)
  step 120 "$python" "$source_dir/bench/forward_backward.py" vgg16 $batch $iterations "$threads" "$device" $precision > /dev/null || continue
  theirs=$(tail -n 1 "$work/step.log" | cut -d' ' -f2)
  echo "| VGG-16 $precision | QuantLab $ours img/s | PyTorch $theirs img/s | ratio $(ratio "$ours" "$theirs") |"
done

section "GPFQ of ResNet-18, 512 calibration images, 4 bits (seconds)"
if [ "$device" = cuda ]; then per_class=64; samples=512; else per_class=4; samples=32; fi
"$python" "$source_dir/bench/gpu/make_data.py" imagenet "$work/imagenet" 8 $per_class
for where in $device; do
  cat > "$work/gpfq_$where.toml" <<TOML
[storage]
logs = "$work/logs"
[problem]
plugin = "ilsvrc12"
data_dir = "$work/imagenet"
classes = 8
[topology]
plugin = "resnet"
depth = 18
[training]
epochs = 0
batch_size = 64
eval_batch_size = 128
valid_fraction = 0.0
[[algorithm]]
plugin = "greedy"
method = "gpfq"
bits = 4
calibration_samples = $samples
data_error = false
sweep = false
export = false
[run]
device = "$where"
TOML
  if step 240 "$qlhost" run "$work/gpfq_$where.toml" > /dev/null; then
    echo "GPFQ on $where: $(grep -o 'quantised .* in [0-9.]* s' "$work/step.log" | tail -1)"
  fi
done

section "gradient codec encode+decode against a device-to-device copy, 25 M values (target >= 0.25 of the copy)"
if [ "$device" = cuda ]; then values=25; else values=2; fi
step 120 "$check/bench/gradient_codec" $values 8192 "$threads" "$device"

section "done: $failures failed step(s)"
[ "$failures" -eq 0 ]
