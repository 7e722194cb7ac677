#!/bin/sh
# make gpu-check: what bench/gpu/check.sh needs on a GPU machine, in one folder to carry there:
# the GPU bundle, the test programs with CUDA tests and the benchmark programs (stripped, finding
# their libraries in the bundle).
#   tools/bundle/make_gpu_check.sh BUILD_DIR OUT_DIR
set -eu
build=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
"$here/make_gpu_bundle.sh" "$build" "$out/bundle"
mkdir -p "$out/tests" "$out/bench"
for program in tests/cuda_test tests/greedy_test tests/nuqsgd_test bin/forward_backward bin/gradient_codec; do
  target="$out/$(echo "$program" | sed 's|^bin/|bench/|')"
  strip --strip-unneeded -o "$target" "$build/$program"
  patchelf --set-rpath '$ORIGIN/../bundle/lib' "$target"
done
echo "gpu-check: $out, $(($(du -sk "$out" | cut -f1) / 1024)) MiB"
