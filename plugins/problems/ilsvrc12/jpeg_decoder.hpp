// JPEG decoding with libjpeg-turbo, scaled in the DCT (by n/8, n = 1..8) to about the size
// the caller needs, and of only the part a crop needs; errors and corrupt data become a
// message instead of libjpeg's default exit().
//
//   JpegImage image;
//   std::string error;
//   if (!decode_jpeg(bytes, [](int w, int h) { return DecodePlan{4}; }, image, error)) fail(error);  // half size
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace ql::ilsvrc12 {

struct JpegImage {
  int width = 0;           ///< of the decoded part, at the decoded scale
  int height = 0;
  int x = 0;               ///< where the decoded part starts in the scaled image
  int y = 0;
  int full_width = 0;      ///< of the stored image
  int full_height = 0;
  int scale_eighths = 8;   ///< the decoded image is scale_eighths/8 of the stored one
  std::vector<std::uint8_t> rgb;  ///< height x width x 3
};

/// What to decode, chosen once the image's size is known.
struct DecodePlan {
  int scale_eighths = 8;  ///< 1..8: decode at scale_eighths/8 of the stored size (in the DCT)
  /// The part needed, in stored-image pixels; width 0: all of it. Only the rows of the part
  /// are decoded, and only the columns of the 8x8 (or 16x16) blocks that cover it.
  int x = 0, y = 0, width = 0, height = 0;
};

/// Decodes `bytes` as `plan(full_width, full_height)` says. Grey and CMYK images are
/// converted to RGB. Returns false with `error` set for anything that is not a valid JPEG
/// (libjpeg's warnings about corrupt data in the decoded part included).
bool decode_jpeg(const std::vector<std::uint8_t>& bytes, const std::function<DecodePlan(int, int)>& plan,
                 JpegImage& image, std::string& error);

/// Encodes height x width x 3 RGB as a JPEG of `quality` (the tests and benchmark make files).
std::vector<std::uint8_t> encode_jpeg(const std::vector<std::uint8_t>& rgb, int width, int height, int quality);

}  // namespace ql::ilsvrc12
