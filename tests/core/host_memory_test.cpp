// keep_freed_memory_for_reuse: a freed activation-sized block stays in the heap for the next
// step instead of going back to the kernel, and a user's own malloc settings win.
#include "quantlab/core/host_memory.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#include <malloc.h>

TEST(HostMemoryTest, TheUsersOwnMallocSettingsWin) {
  ASSERT_EQ(setenv("MALLOC_TRIM_THRESHOLD_", "131072", 1), 0);
  EXPECT_FALSE(ql::core::keep_freed_memory_for_reuse());
  unsetenv("MALLOC_TRIM_THRESHOLD_");
  ASSERT_EQ(setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536", 1), 0);
  EXPECT_FALSE(ql::core::keep_freed_memory_for_reuse());
  unsetenv("GLIBC_TUNABLES");
}

TEST(HostMemoryTest, AFreedActivationSizedBlockStaysForReuse) {
  ASSERT_TRUE(ql::core::keep_freed_memory_for_reuse());
  // 8 MiB: one activation of CIFAR ResNet-20's first stage at batch 128. glibc's default would
  // mmap it (above the 128 KiB threshold) and unmap it on free.
  constexpr std::size_t kBlock = 8u << 20;
  const auto mapped_before = mallinfo2().hblkhd;
  void* block = std::malloc(kBlock);
  ASSERT_NE(block, nullptr);
  std::memset(block, 1, kBlock);
  EXPECT_EQ(mallinfo2().hblkhd, mapped_before) << "served by mmap, not the heap";
  std::free(block);
  EXPECT_GE(mallinfo2().fordblks, kBlock) << "the heap was trimmed: the block went back to the kernel";
}
