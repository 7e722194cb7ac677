// NUQSGD's gradient streams (what a data-parallel rank receives): the first byte picks the
// level set and the norm, the second and third the number of values and the bucket size; the
// rest is the stream. A stream either decodes to finite values or is refused with a ql::Error.
#include "fuzz_support.hpp"
#include "plugins/algorithms/nuqsgd/gradient_quantizer.hpp"

#include <torch/types.h>

#include <cmath>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  using ql::nuqsgd::Scheme;
  const Scheme schemes[] = {Scheme::nuq, Scheme::qsgd, Scheme::qsgdinf, Scheme::trn};
  const Scheme scheme = schemes[data[0] % 4];
  const int bits = 2 + (data[0] / 4) % 7;  // 2 .. 8
  const std::int64_t numel = data[1] * 4 + (data[0] >> 7);
  const std::int64_t bucket_size = 1 + data[2] % 64;
  const ql::nuqsgd::GradientQuantizer quantizer(ql::nuqsgd::level_set(scheme, scheme == Scheme::trn ? 2 : bits),
                                                ql::nuqsgd::uses_l2_norm(scheme), bucket_size);
  const std::vector<std::uint8_t> stream(data + 3, data + size);
  ql::fuzz::expect_clean_failure([&] {
    const at::Tensor decoded = quantizer.decode(stream, numel);
    at::Tensor sum = torch::zeros({numel});
    quantizer.decode_add(stream, sum, 0.5f);
    if (!torch::isfinite(decoded).all().item<bool>() || !torch::isfinite(sum).all().item<bool>()) {
      std::fprintf(stderr, "finding: an accepted stream decodes to non-finite values\n");
      std::abort();
    }
  });
  return 0;
}
