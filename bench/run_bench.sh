#!/bin/sh
# Prints the benchmark tables of README.md ("Performance"). Usage: bench/run_bench.sh [BUILD_DIR]
#   QL_BENCH_THREADS  intra-op threads (default: all cores)
#   QL_BENCH_ROUNDS   alternating rounds of the forward+backward comparison (default 5)
set -eu
build=${1:-build}
cd "$(dirname "$0")/.."
threads=${QL_BENCH_THREADS:-$(nproc)}
rounds=${QL_BENCH_ROUNDS:-5}

"$build/bin/train_throughput" examples/fashion_mnist_mlp.toml "${QL_BENCH_EPOCHS:-5}" "$threads"
echo

# Forward+backward: the plugins (C++) against the same networks in Python (python3-torch),
# alternating so that the machine's load hits both alike; median of the rounds.
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
echo "forward+backward, batch of 3x32x32 images, $threads threads, median of $rounds alternating rounds"
echo "| network | QuantLab plugin (images/s) | PyTorch in Python (images/s) | ratio |"
echo "| --- | ---: | ---: | ---: |"
for spec in "resnet20 128 4" "vgg_ana 32 2"; do
  set -- $spec
  cpp=""; py=""
  for _ in $(seq "$rounds"); do
    cpp="$cpp $("$build/bin/forward_backward" "$1" "$2" "$3" "$threads" | cut -d' ' -f2)"
    py="$py $(/usr/bin/python3 bench/forward_backward.py "$1" "$2" "$3" "$threads" | cut -d' ' -f2)"
  done
  c=$(echo "$cpp" | tr ' ' '\n' | grep . | median)
  p=$(echo "$py" | tr ' ' '\n' | grep . | median)
  echo "| $1 | $c | $p | $(awk "BEGIN {printf \"%.3f\", $c / $p}") |"
done
