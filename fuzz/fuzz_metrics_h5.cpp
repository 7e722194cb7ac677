// metrics.h5 as a resumed run reads it back.
#include "fuzz_support.hpp"
#include "quantlab/core/metrics_log.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto file = ql::fuzz::write_input("metrics.h5", data, size);
  ql::fuzz::expect_clean_failure([&] { (void)ql::core::read_metrics_h5(file); });
  return 0;
}
