// JPEG decoding with libjpeg-turbo, at a reduced scale (1/2, 1/4, 1/8 in the DCT) when the
// target is much smaller than the source; errors and corrupt data become a message instead of
// libjpeg's default exit().
//
//   JpegImage image;
//   std::string error;
//   if (!decode_jpeg(bytes, [](int w, int h) { return 2; }, image, error)) fail(error);
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace ql::ilsvrc12 {

struct JpegImage {
  int width = 0;           ///< of the decoded (scaled) image
  int height = 0;
  int full_width = 0;      ///< of the stored image
  int full_height = 0;
  int scale_denom = 1;     ///< the decoded image is 1/scale_denom of the stored one
  std::vector<std::uint8_t> rgb;  ///< height x width x 3
};

/// Decodes `bytes`. `choose_denom(full_width, full_height)` returns 1, 2, 4 or 8, the DCT
/// scaling to decode at. Grey and CMYK images are converted to RGB. Returns false with
/// `error` set for anything that is not a complete, valid JPEG (libjpeg's warnings about
/// corrupt data included).
bool decode_jpeg(const std::vector<std::uint8_t>& bytes, const std::function<int(int, int)>& choose_denom,
                 JpegImage& image, std::string& error);

/// Encodes height x width x 3 RGB as a JPEG of `quality` (the tests and benchmark make files).
std::vector<std::uint8_t> encode_jpeg(const std::vector<std::uint8_t>& rgb, int width, int height, int quality);

}  // namespace ql::ilsvrc12
