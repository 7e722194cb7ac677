// Pretrained-weights files (docs/weights.md): .safetensors headers and data, and torch.save'd
// state dicts (the zip and our restricted unpickler). The first byte picks the reader; every
// input must load or fail with a ql::Error, never crash or run code.
#include "fuzz_support.hpp"
#include "quantlab/core/weights_file.hpp"

#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  ql::fuzz::expect_clean_failure([&] {
    if (data[0] & 1) (void)ql::core::read_safetensors(bytes, "weights.safetensors");
    else (void)ql::core::read_state_dict(bytes, "weights.pth");
  });
  return 0;
}
