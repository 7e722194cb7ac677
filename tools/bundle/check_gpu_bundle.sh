#!/bin/sh
# Checks a GPU bundle with nothing but itself and a torch installation: every shared library of
# every program, library and plugin resolves into the bundle, the torch package (its lib/ and
# the nvidia/ CUDA wheels beside it) or the C library; and the launcher starts qlhost.
#   tools/bundle/check_gpu_bundle.sh BUNDLE SITE_PACKAGES
set -eu
. "$(cd "$(dirname "$0")" && pwd)/system_libraries.sh"
bundle=$1
site=$2
torch=$site/torch
libraries="$bundle/lib:$torch/lib"
for cuda in "$site"/nvidia/*/lib; do libraries="$libraries:$cuda"; done
status=0
for elf in $(find "$bundle/libexec" "$bundle/lib" -type f \( -name '*.so*' -o -perm -u+x \) \
                  -exec sh -c 'head -c 4 "$1" | grep -q ELF' _ {} \; -print); do
  resolved=$(env -i PATH=/usr/bin:/bin LD_LIBRARY_PATH="$libraries" ldd "$elf" 2>&1) || true
  if echo "$resolved" | grep -q "not found"; then
    echo "check_gpu_bundle: $elf: $(echo "$resolved" | grep 'not found' | head -3 | tr -s ' \t' ' ')" >&2
    status=1
  fi
  outside=$(echo "$resolved" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | while read -r name path; do
    case "$path" in "$bundle"/*|"$site"/*) continue ;; esac
    is_system "$name" && continue
    echo "$name => $path"
  done)
  if [ -n "$outside" ]; then
    echo "check_gpu_bundle: $elf loads from outside the bundle and torch: $outside" >&2
    status=1
  fi
done
[ $status -eq 0 ] || exit 1
version=$(env -i PATH=/usr/bin:/bin QL_LIBTORCH="$torch" "$bundle/bin/qlhost" --version)
echo "gpu-bundle check: every library resolves; $version"
