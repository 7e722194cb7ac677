#!/bin/sh
# What onnxruntime runs for each kind of exported network (docs/export.md, "What onnxruntime
# runs"): short runs (one epoch) on 3,000 Fashion-MNIST training images and a ResNet-8 on
# generated CIFAR-10 files, each exported and checked by tools/verify_onnx.py --kernels on the
# test split (agreement with QuantLab per sample, then the operators after onnxruntime's graph
# rewrites). Usage: bench/export_kernels.sh [BUILD_DIR]
set -eu
build=${1:-build}
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# run NAME OPSET FOLD PROBLEM TOPOLOGY ALGORITHM: one unit, exported and verified.
run() {
  mkdir -p "$work/$1"
  cat > "$work/$1/exp.toml" <<TOML
[experiment]
seed = 5
[storage]
logs = "logs"
[problem]
$4
[topology]
$5
[training]
epochs = 1
batch_size = 64
[[algorithm]]
$6
[export]
format = "onnx"
opset = $2
fold_batch_norm = $3
TOML
  (cd "$work/$1" && "$root/$build/bin/qlhost" run exp.toml > run.log 2>&1) || { cat "$work/$1/run.log"; exit 1; }
  echo "== $1 (opset $2, fold_batch_norm $3)"
  "$root/.venv/bin/python" tools/verify_onnx.py "$work/$1"/logs/*/*/exp0001 --kernels 2>/dev/null | tail -n 3
}

fmnist='plugin = "mnist"
max_train_samples = 3000
max_test_samples = 1000'
mlp='plugin = "mlp"
hidden = [64]'
convnet='plugin = "convnet"
config = "quantifind_mnist"'
ana_mlp='plugin = "mlp"
hidden = [256, 256]
batch_norm = true
activation = "identity"'
ana='plugin = "ana"
forward_sigma = [0.0]'

run uniform8_weights 13 false "$fmnist" "$mlp" 'plugin = "uniform"
bits = 8
granularity = "per_channel"
sweep = false'
run uniform4_weights 21 false "$fmnist" "$mlp" 'plugin = "uniform"
bits = 4
granularity = "per_channel"
sweep = false'
run uniform4_inputs 13 false "$fmnist" "$mlp" 'plugin = "uniform"
bits = 4
quantize_inputs = true
sweep = false'
run uniform8_inputs_convnet 13 false "$fmnist" "$convnet" 'plugin = "uniform"
bits = 8
quantize_inputs = true
sweep = false'
run ana_ternary 13 false "$fmnist" "$ana_mlp" "$ana"
run ana_ternary_folded 13 true "$fmnist" "$ana_mlp" "$ana"
run ana_ternary_folded_opset21 21 true "$fmnist" "$ana_mlp" "$ana"
run ana_8bit_folded 13 true "$fmnist" "$ana_mlp" 'plugin = "ana"
nbits = 8
eps = 0.05
forward_sigma = [0.0]'

# CIFAR-10 files in the official format: class k is noise plus a brightness of its own in one channel.
mkdir -p "$work/cifar"
"$root/.venv/bin/python" - "$work/cifar" <<'PY'
import sys
import numpy as np
rng = np.random.default_rng(7)
def records(n):
    rows = []
    for label in rng.integers(0, 10, n):
        image = rng.integers(0, 64, (3, 1024))
        image[label % 3] += 64 + 48 * (label // 3)
        rows.append(np.concatenate([[label], np.minimum(image.ravel(), 255)]).astype(np.uint8))
    return np.stack(rows)
for b in range(1, 6):
    records(200).tofile(f"{sys.argv[1]}/data_batch_{b}.bin")
records(300).tofile(f"{sys.argv[1]}/test_batch.bin")
PY
run resnet8_ana 13 false "plugin = \"cifar10\"
data_dir = \"$work/cifar\"
augment = false" 'plugin = "resnet"
depth = 8' "$ana"
