#!/bin/sh
# Prints the benchmark tables of README.md ("Performance"). Usage: bench/run_bench.sh [BUILD_DIR]
set -eu
build=${1:-build}
cd "$(dirname "$0")/.."
"$build/bin/train_throughput" examples/fashion_mnist_mlp.toml "${QL_BENCH_EPOCHS:-5}" "${QL_BENCH_THREADS:-$(nproc)}"
