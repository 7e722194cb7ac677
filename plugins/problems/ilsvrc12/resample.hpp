// Antialiased bilinear resampling of an 8-bit RGB image straight into a normalised planar
// float tensor: the filter of PIL's and ATen's `_upsample_bilinear2d_aa` (a triangle widened by
// the scale when shrinking), with the crop window, the horizontal flip and the normalisation
// folded into the same two passes. It replaces four LibTorch ops a sample (uint8 -> float, the
// resize, flip, normalise), each a full pass with its own allocation.
//
//   ResampleTarget target{out, 224, 224, 224, 224, 0, 0, flip, mean, inv_std};
//   resample_normalised(image.rgb.data(), image.width, {x, y, w, h}, target);
#pragma once

#include <cstdint>

namespace ql::ilsvrc12 {

/// A part of the source image, in pixels.
struct SourceRegion {
  int x = 0, y = 0, width = 0, height = 0;
};

/// Where the result goes: the source region is resized to `height` x `width`, of which the
/// window of `window_height` x `window_width` at (`window_y`, `window_x`) is written to `planar`
/// as 3 x window_height x window_width floats, (value - mean[c]) * inv_std[c], mirrored left to
/// right if `flip`.
struct ResampleTarget {
  float* planar = nullptr;
  int height = 0, width = 0;
  int window_height = 0, window_width = 0;
  int window_y = 0, window_x = 0;
  bool flip = false;
  const float* mean = nullptr;     ///< 3 values, in byte units
  const float* inv_std = nullptr;  ///< 3 values, in 1 / byte units
};

/// Resamples `region` of `rgb` (rows of `row_pixels` RGB pixels) as `target` says. The region
/// must lie inside the image and the window inside the resized size.
void resample_normalised(const std::uint8_t* rgb, int row_pixels, SourceRegion region, const ResampleTarget& target);

}  // namespace ql::ilsvrc12
