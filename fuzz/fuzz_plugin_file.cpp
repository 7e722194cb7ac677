// The plugin metadata reader: ELF section table and the metadata blob, read without loading.
#include "fuzz_support.hpp"
#include "quantlab/core/plugin_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto file = ql::fuzz::write_input("plugin.so", data, size);
  ql::fuzz::expect_clean_failure([&] { (void)ql::core::inspect_plugin_file(file); });
  return 0;
}
