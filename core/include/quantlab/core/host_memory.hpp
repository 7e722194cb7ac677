// How training processes use the C heap. glibc hands every freed block above its mmap threshold
// back to the kernel and trims the heap's top beyond 128 KiB, so a training step, which frees
// and re-allocates the same activation buffers every step, page-faults and zeroes them anew
// each time (CIFAR ResNet-20 forward+backward on 2 cores: 15-20 % of the step).
//
//   keep_freed_memory_for_reuse();  // once, before training
#pragma once

namespace ql::core {

/// Keeps freed memory in the process for reuse: blocks up to 32 MiB (glibc's ceiling for the
/// mmap threshold; larger ones still come from mmap) are served from the heap, and the heap is
/// not trimmed, so a process stays at its peak size. Leaves malloc alone where the environment
/// configures it (GLIBC_TUNABLES naming glibc.malloc, MALLOC_MMAP_THRESHOLD_ or
/// MALLOC_TRIM_THRESHOLD_ set). Returns whether the settings were applied.
bool keep_freed_memory_for_reuse();

}  // namespace ql::core
