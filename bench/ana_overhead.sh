#!/bin/sh
# ANA's training cost: the ternary-weight, ternary-activation MLP of examples/fashion_mnist_ana.toml
# (784-1024-1024-10, every weight and activation through an ANA quantiser) against the same MLP in
# float (examples/fashion_mnist_mlp1024.toml), images/s of whole training epochs on
# Fashion-MNIST, the two alternating; median of the rounds. Usage: bench/ana_overhead.sh [BUILD_DIR]
#   QL_BENCH_ROUNDS  rounds (default 3), QL_BENCH_EPOCHS  epochs a run (default 2)
set -eu
build=${1:-build}
cd "$(dirname "$0")/.."
rounds=${QL_BENCH_ROUNDS:-3}
epochs=${QL_BENCH_EPOCHS:-2}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
speed() {  # images/s of every epoch of one run
  "$build/bin/qlhost" run "$1" --set storage.logs="$logs" --set training.epochs="$epochs" --set metrics.histogram_every=0 |
    sed -n 's/.*  \([0-9]*\) img\/s .*/\1/p'
}
float=""; ana=""
for round in $(seq "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then
    float="$float $(speed examples/fashion_mnist_mlp1024.toml)"; ana="$ana $(speed examples/fashion_mnist_ana.toml)"
  else
    ana="$ana $(speed examples/fashion_mnist_ana.toml)"; float="$float $(speed examples/fashion_mnist_mlp1024.toml)"
  fi
done
f=$(echo "$float" | tr ' ' '\n' | grep . | median)
a=$(echo "$ana" | tr ' ' '\n' | grep . | median)
echo "ANA training cost, MLP 784-1024-1024-10 on Fashion-MNIST, batch 256, median epoch of $rounds alternating rounds"
echo "| network | images/s | slowdown |"
echo "| --- | ---: | ---: |"
echo "| float (ReLU) | $f | 1.00 |"
echo "| ANA ternary weights and activations | $a | $(awk "BEGIN {printf \"%.2f\", $f / $a}") |"
