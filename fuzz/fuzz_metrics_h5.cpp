// metrics.h5 as a resumed run or `qlhost report` reads it: the checksum trailer, and with
// QL_FUZZ_SEAL=1 (every input given a valid trailer, as a crafted file would have) our reader
// and HDF5 behind it. HDF5 1.10.8 crashes on some such files (a null read in
// H5F__accum_read under H5Ovisit2; fuzz/findings/ keeps one); corruption never gets that far.
#include "fuzz_support.hpp"
#include "quantlab/core/experiment_store.hpp"
#include "quantlab/core/metrics_log.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool seal = std::getenv("QL_FUZZ_SEAL") != nullptr && std::string(std::getenv("QL_FUZZ_SEAL")) == "1";
  std::string bytes(reinterpret_cast<const char*>(data), size);
  if (seal) bytes += ql::core::checksum_trailer("QLH5", bytes);
  const auto file = ql::fuzz::write_input("metrics.h5", reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  ql::fuzz::expect_clean_failure([&] { (void)ql::core::read_metrics_h5(file); });
  return 0;
}
