// The ILSVRC12 JPEG decode path: full, scaled and cropped decodes of the same bytes.
#include "fuzz_support.hpp"
#include "plugins/problems/ilsvrc12/jpeg_decoder.hpp"

#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const int scale = 1 + data[0] % 8;
  const int part = data[1] % 3;
  const std::vector<std::uint8_t> bytes(data + 2, data + size);
  ql::fuzz::expect_clean_failure([&] {
    ql::ilsvrc12::JpegImage image;
    std::string error;
    ql::ilsvrc12::decode_jpeg(
        bytes,
        [&](int width, int height) {
          ql::ilsvrc12::DecodePlan plan;
          plan.scale_eighths = scale;
          if (part == 1) {
            plan.x = width / 4, plan.y = height / 3, plan.width = std::max(1, width / 2), plan.height = std::max(1, height / 2);
          }
          return plan;
        },
        image, error);
  });
  return 0;
}
