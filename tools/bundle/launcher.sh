#!/bin/sh
# QuantLab's launcher in a GPU bundle (make gpu-bundle): finds LibTorch 2.11 (QL_LIBTORCH, a folder
# with lib/libtorch.so, or the `torch` package of QL_PYTHON, default python3) and its CUDA
# libraries, then runs the program of the same name in ../libexec.
here=$(cd "$(dirname "$0")/.." && pwd)
torch=${QL_LIBTORCH:-}
if [ -z "$torch" ]; then
  torch=$("${QL_PYTHON:-python3}" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null) || torch=""
fi
if [ ! -f "$torch/lib/libtorch.so" ]; then
  echo "$(basename "$0"): LibTorch not found: set QL_LIBTORCH to a folder with lib/libtorch.so, or QL_PYTHON to a" \
       "python whose torch is 2.11" >&2
  exit 2
fi
if [ -f "$torch/version.py" ] && ! grep -q "^__version__ = '2\.11\." "$torch/version.py"; then
  echo "$(basename "$0"): $torch is torch $(sed -n "s/^__version__ = '\(.*\)'/\1/p" "$torch/version.py"); this" \
       "QuantLab was built against 2.11" >&2
  exit 2
fi
libraries="$here/lib:$torch/lib"
for cuda in "$torch"/../nvidia/*/lib; do
  [ -d "$cuda" ] && libraries="$libraries:$cuda"
done
export PLPLOT_DRV_DIR="${PLPLOT_DRV_DIR:-$here/lib/plplot/drivers}"
LD_LIBRARY_PATH="$libraries${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/libexec/$(basename "$0")" "$@"
