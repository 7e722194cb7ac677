#!/bin/sh
# Prints the benchmark tables of README.md ("Performance"). Usage: bench/run_bench.sh [BUILD_DIR]
#   QL_BENCH_THREADS  intra-op threads (default: all cores)
#   QL_BENCH_ROUNDS   rounds of the comparisons, the order of the two sides alternating (default 6)
set -eu
build=${1:-build}
cd "$(dirname "$0")/.."
# The Python baselines run on the same torch the build links (make deps installs it in .venv).
python=${QL_PYTHON:-.venv/bin/python}
threads=${QL_BENCH_THREADS:-$(nproc)}
rounds=${QL_BENCH_ROUNDS:-6}

"$build/bin/train_throughput" examples/fashion_mnist_mlp.toml "${QL_BENCH_EPOCHS:-5}" "$threads"
echo

# Forward+backward: the plugins (C++) against the same networks in Python (the venv's torch, the same LibTorch),
# alternating so that the machine's load hits both alike; median of the rounds. The third
# column runs Python with the malloc settings qlhost makes itself (core/host_memory.hpp), to
# show how much of the ratio is that.
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
same_malloc="glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=2147483647"
echo "forward+backward, batch of 3x32x32 images, $threads threads, median of $rounds alternating rounds"
echo "| network | QuantLab plugin (images/s) | PyTorch in Python (images/s) | ratio | Python, qlhost's malloc settings | ratio |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
for spec in "resnet20 128 6" "vgg_ana 32 3"; do
  set -- $spec
  cpp=""; py=""; tuned=""
  for round in $(seq "$rounds"); do
    # Which side runs first alternates: the second of a pair tends to run faster here.
    if [ $((round % 2)) -eq 1 ]; then
      cpp="$cpp $("$build/bin/forward_backward" "$1" "$2" "$3" "$threads" | cut -d' ' -f2)"
      py="$py $("$python" bench/forward_backward.py "$1" "$2" "$3" "$threads" | cut -d' ' -f2)"
      tuned="$tuned $(GLIBC_TUNABLES=$same_malloc "$python" bench/forward_backward.py "$1" "$2" "$3" "$threads" | cut -d' ' -f2)"
    else
      tuned="$tuned $(GLIBC_TUNABLES=$same_malloc "$python" bench/forward_backward.py "$1" "$2" "$3" "$threads" | cut -d' ' -f2)"
      py="$py $("$python" bench/forward_backward.py "$1" "$2" "$3" "$threads" | cut -d' ' -f2)"
      cpp="$cpp $("$build/bin/forward_backward" "$1" "$2" "$3" "$threads" | cut -d' ' -f2)"
    fi
  done
  c=$(echo "$cpp" | tr ' ' '\n' | grep . | median)
  p=$(echo "$py" | tr ' ' '\n' | grep . | median)
  t=$(echo "$tuned" | tr ' ' '\n' | grep . | median)
  echo "| $1 | $c | $p | $(awk "BEGIN {printf \"%.3f\", $c / $p}") | $t | $(awk "BEGIN {printf \"%.3f\", $c / $t}") |"
done

# The ImageNet pipelines (train: decode + random-resized-crop 224 + flip + normalise + batch;
# eval: decode + resize 256 + centre crop 224 + normalise + batch) on generated full-size JPEGs,
# against torchvision's ImageFolder + DataLoader with the same transforms, workers and batch size
# (the venv's torchvision and Pillow).
images_dir=${QL_BENCH_IMAGES_DIR:-/tmp/quantlab-bench-imagenet}
compare_pipelines() {
  mode=$1
  echo "ILSVRC12 $mode pipeline, 512 JPEGs of 500x375 in $images_dir, $threads workers, batch 32, median of $rounds alternating rounds"
  echo "| pipeline | images/s | ratio |"
  echo "| --- | ---: | ---: |"
  ours=""; theirs=""
  for round in $(seq "$rounds"); do
    if [ $((round % 2)) -eq 1 ]; then
      ours="$ours $("$build/bin/imagenet_pipeline" "$images_dir" 512 "$threads" 32 "$mode" | cut -d' ' -f2)"
      theirs="$theirs $("$python" bench/imagenet_pipeline.py "$images_dir" "$threads" 32 "$mode" | cut -d' ' -f2)"
    else
      theirs="$theirs $("$python" bench/imagenet_pipeline.py "$images_dir" "$threads" 32 "$mode" | cut -d' ' -f2)"
      ours="$ours $("$build/bin/imagenet_pipeline" "$images_dir" 512 "$threads" 32 "$mode" | cut -d' ' -f2)"
    fi
  done
  o=$(echo "$ours" | tr ' ' '\n' | grep . | median)
  t=$(echo "$theirs" | tr ' ' '\n' | grep . | median)
  echo "| torchvision ImageFolder + DataLoader | $t | 1.000 |"
  echo "| QuantLab ilsvrc12 + BatchLoader | $o | $(awk "BEGIN {printf \"%.2f\", $o / $t}") |"
  echo
}
echo
compare_pipelines train
compare_pipelines eval

bench/gpfq_speed.sh "$build"
echo

bench/ana_overhead.sh "$build"
