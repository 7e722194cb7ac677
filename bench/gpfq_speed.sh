#!/bin/sh
# GPFQ speed: the greedy plugin quantising the paper's MNIST MLP (784-500-300-10, BN, trained one
# epoch on Fashion-MNIST) with 25 000 calibration images, against the paper's per-neuron
# dynamical system in NumPy (bench/gpfq_reference.py) on the same weights and the same layer
# data, which the plugin dumps. Usage: bench/gpfq_speed.sh [BUILD_DIR]
#   QL_BENCH_GPFQ_NEURONS  NumPy runs this many neurons a layer and extrapolates (default 50;
#                          0: all of them, about 2.5 minutes)
set -eu
build=${1:-build}
cd "$(dirname "$0")/.."
# The Python baselines run on the same torch the build links (make deps installs it in .venv).
python=${QL_PYTHON:-.venv/bin/python}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
common="--set storage.logs=$logs --set training.epochs=1 --set algorithm.0.sweep=false --set algorithm.0.export=false"
# Timed run: the plugin as users run it. Then the same (seeded, identical) run dumping its data.
"$build/bin/qlhost" run examples/fashion_mnist_gpfq.toml $common --set algorithm.0.data_error=false > "$logs/timed.log"
"$build/bin/qlhost" run examples/fashion_mnist_gpfq.toml $common --set algorithm.0.dump_data=true > "$logs/dump.log"
ours=$(sed -n 's/.*quantised 3 layers with .* in \([0-9.]*\) s.*/\1/p' "$logs/timed.log")
data=$(ls "$logs"/mnist/mlp/exp0002/fold0/greedy/layer_data.h5)
"$python" bench/gpfq_reference.py "$data" --neurons "${QL_BENCH_GPFQ_NEURONS:-50}" > "$logs/numpy.log"
numpy=$(sed -n 's/^numpy_seconds \(.*\)/\1/p' "$logs/numpy.log")
echo "GPFQ of the MNIST MLP 784-500-300-10 (ternary, C = 3), 25 000 calibration samples"
sed 's/^/  numpy: /' "$logs/numpy.log"
echo "| implementation | seconds | speed-up |"
echo "| --- | ---: | ---: |"
echo "| NumPy, per neuron (the paper's system) | $numpy | 1.0 |"
echo "| QuantLab greedy plugin (forward passes, Gram matrices, GPFQ) | $ours | $(awk "BEGIN {printf \"%.0f\", $numpy / $ours}") |"
