// Checkpoints: the checksum trailer and everything QuantLab reads behind it. With
// QL_FUZZ_SEAL=1 inputs whose first byte is odd get a valid trailer, as a deliberately crafted
// file would, so LibTorch's archive reader is fuzzed too: it terminates the process on some
// such archives (an exception thrown inside its TorchScript type parser escapes a noexcept
// frame; fuzz/findings/ keeps one). Random corruption never gets that far: the CRC stops it.
#include "fuzz_support.hpp"
#include "core/src/run/checkpoints.hpp"
#include "quantlab/core/experiment_store.hpp"

#include <boost/crc.hpp>
#include <torch/serialize/input-archive.h>
#include <torch/types.h>

#include <cstring>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  static const bool seal = std::getenv("QL_FUZZ_SEAL") != nullptr && std::string(std::getenv("QL_FUZZ_SEAL")) == "1";
  if (seal && (data[0] & 1)) {  // the trailer matches, so the archive itself gets read
    boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
    crc.process_bytes(bytes.data(), bytes.size());
    char trailer[16] = {'Q', 'L', 'C', 'K'};
    const std::uint32_t sum = crc.checksum();
    const std::uint64_t length = bytes.size();
    std::memcpy(trailer + 4, &sum, 4);
    std::memcpy(trailer + 8, &length, 8);
    bytes.append(trailer, 16);
  }
  const auto file = ql::fuzz::write_input("last.pt", reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  try {
    const std::string archive_bytes = ql::core::read_checkpoint(file);
    torch::serialize::InputArchive archive;
    ql::core::load_archive(archive, archive_bytes);
    for (const std::string& key : archive.keys()) {
      at::Tensor value;
      if (archive.try_read(key, value, /*is_buffer=*/true)) (void)value.sum();
    }
    // What `qlhost export` reads behind the weights: integer forms and the input encoding.
    (void)ql::core::run::read_result_record(archive);
  } catch (const ql::Error&) {
  } catch (const c10::Error&) {
    // LibTorch's reader reports a malformed archive as c10::Error; the runner wraps it with
    // the file's name ("cannot resume from this checkpoint: ...").
  }
  return 0;
}
