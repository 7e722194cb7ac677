// MNIST's IDX files, raw or gzip (the first byte picks which name the input gets).
#include "fuzz_support.hpp"
#include "plugins/problems/mnist/idx_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const bool gzip = data[0] & 1;
  const auto file = ql::fuzz::write_input(gzip ? "images.gz" : "images", data + 1, size - 1);
  ql::fuzz::expect_clean_failure([&] { (void)ql::mnist::read_idx(file); });
  return 0;
}
