#!/bin/sh
# make gpu-bundle: one folder that runs QuantLab on a machine where only PyTorch 2.11 (the torch
# wheel and its CUDA libraries) is installed. It holds the install tree (bin/ launchers, the real
# programs in libexec/, libqlsdk, the plugins, the SDK's headers and CMake files) and every shared
# library those need beyond LibTorch, CUDA and the C library (Boost, fmt, toml++, protobuf,
# HDF5, PLplot and what they load). LibTorch comes from QL_LIBTORCH or the `torch` package of
# QL_PYTHON (default python3) when the launcher starts.
#   tools/bundle/make_gpu_bundle.sh BUILD_DIR OUT_DIR
set -eu
build=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
limit_mib=${QL_BUNDLE_LIMIT_MIB:-48}
# Plugins left out: language_names needs ICU, whose data alone is 31 MiB (a CPU-sized problem).
leave_out=${QL_BUNDLE_LEAVE_OUT-language_names}

torch_lib=$(ldd "$build/bin/qlhost" | awk '$1 == "libtorch.so" {print $3}' | xargs dirname)
[ -d "$torch_lib" ] || { echo "make_gpu_bundle: $build/bin/qlhost does not resolve libtorch.so" >&2; exit 1; }
site=$(cd "$torch_lib/../.." && pwd)  # site-packages: torch/ and nvidia/

rm -rf "$out"
cmake --install "$build" --prefix "$out" >/dev/null
mkdir -p "$out/libexec"
for plugin in $leave_out; do
  rm -f "$out/lib/quantlab/plugins/$plugin.so"
  echo "gpu-bundle: left out plugin $plugin"
done
for program in qlhost qlsdk; do
  mv "$out/bin/$program" "$out/libexec/$program"
  cp "$here/launcher.sh" "$out/bin/$program"
  chmod 755 "$out/bin/$program"
done

# The C library and the loader come from the machine; LibTorch and CUDA from its torch.
. "$here/system_libraries.sh"
# The CUDA runtime our kernels link is the one of torch's nvidia-* wheels, not the toolkit's.
torch_libraries="$torch_lib"
for cuda in "$site"/nvidia/*/lib; do torch_libraries="$torch_libraries:$cuda"; done
elves=$(find "$out/libexec" "$out/lib" -type f \( -name '*.so*' -o -perm -u+x \) -exec sh -c 'head -c 4 "$1" | grep -q ELF' _ {} \; -print)
for elf in $elves; do
  LD_LIBRARY_PATH="$out/lib:$torch_libraries" ldd "$elf" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' |
    while read -r name path; do
      case "$path" in "$site"/*|"$out"/*) continue ;; esac
      is_system "$name" && continue
      [ -e "$out/lib/$name" ] || cp -L "$path" "$out/lib/$name"
    done
done
# PLplot's output drivers are loaded by name at run time: the cairo one (PNG) and what it needs.
plplot_drivers=$(pkg-config --variable=drvdir plplot 2>/dev/null || true)
if [ -n "$plplot_drivers" ] && [ -f "$plplot_drivers/cairo.so" ]; then
  mkdir -p "$out/lib/plplot/drivers"
  cp "$plplot_drivers/cairo.so" "$plplot_drivers/cairo.driver_info" "$out/lib/plplot/drivers/"
  LD_LIBRARY_PATH="$out/lib" ldd "$plplot_drivers/cairo.so" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' |
    while read -r name path; do
      is_system "$name" || [ -e "$out/lib/$name" ] || cp -L "$path" "$out/lib/$name"
    done
fi
find "$out/libexec" "$out/lib" -type f -name '*.so*' -exec strip --strip-unneeded {} + 2>/dev/null || true
strip --strip-unneeded "$out/libexec/qlhost" "$out/libexec/qlsdk"
# No path of this machine: the bundle's own lib/ (and the launcher's LD_LIBRARY_PATH) only.
for elf in "$out"/libexec/* "$out"/lib/libqlsdk.so.* "$out"/lib/quantlab/plugins/*.so; do
  patchelf --set-rpath '$ORIGIN/../lib' "$elf"
done

size_kib=$(du -sk "$out" | cut -f1)
echo "gpu-bundle: $out, $((size_kib / 1024)) MiB (limit $limit_mib), $(ls "$out/lib" | grep -c '\.so') libraries"
[ "$size_kib" -le $((limit_mib * 1024)) ] || { echo "gpu-bundle: larger than $limit_mib MiB" >&2; exit 1; }
"$here/check_gpu_bundle.sh" "$out" "$site"
