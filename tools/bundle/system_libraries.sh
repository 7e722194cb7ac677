# Sourced by make_gpu_bundle.sh and check_gpu_bundle.sh: the libraries a GPU bundle takes from
# the machine it runs on (the C library and the loader), never from the build machine.
is_system() {
  case "$1" in
    libc.so.*|libm.so.*|libdl.so.*|librt.so.*|libpthread.so.*|libresolv.so.*|libutil.so.*|ld-linux*) return 0 ;;
  esac
  return 1
}
