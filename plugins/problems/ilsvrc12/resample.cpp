#include "resample.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace ql::ilsvrc12 {
namespace {

// The taps of one axis: output i of the window reads inputs [first[i], first[i] + count[i])
// with weights[i * stride + k].
struct AxisTaps {
  std::vector<int> first, count;
  std::vector<float> weights;
  int stride = 0;
};

// PIL's coefficients (and ATen's `_upsample_bilinear2d_aa`): output i sits at (i + 0.5) * scale
// in the input; the triangle's half-width is the scale when shrinking (that is the antialiasing)
// and 1 when enlarging; the weights of each output are normalised to sum to 1.
AxisTaps axis_taps(int in_size, int out_size, int window_first, int window_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double support = std::max(scale, 1.0);
  const double inv_scale = 1.0 / support;
  AxisTaps taps;
  taps.stride = 2 * static_cast<int>(std::ceil(support)) + 1;
  taps.first.resize(static_cast<std::size_t>(window_size));
  taps.count.resize(static_cast<std::size_t>(window_size));
  taps.weights.assign(static_cast<std::size_t>(window_size) * taps.stride, 0.0f);
  for (int i = 0; i < window_size; ++i) {
    const double center = scale * (window_first + i + 0.5);
    const int lo = std::max(static_cast<int>(center - support + 0.5), 0);
    const int hi = std::min(static_cast<int>(center + support + 0.5), in_size);
    float* weights = &taps.weights[static_cast<std::size_t>(i) * taps.stride];
    double total = 0;
    for (int j = lo; j < hi; ++j) {
      const double distance = std::abs((j - center + 0.5) * inv_scale);
      const double weight = distance < 1.0 ? 1.0 - distance : 0.0;
      weights[j - lo] = static_cast<float>(weight);
      total += weight;
    }
    for (int j = lo; total > 0 && j < hi; ++j) weights[j - lo] = static_cast<float>(weights[j - lo] / total);
    taps.first[static_cast<std::size_t>(i)] = lo;
    taps.count[static_cast<std::size_t>(i)] = hi - lo;
  }
  return taps;
}

// out[j] = sum over k of weights[k] * rows[k * row_stride + j]: the vertical pass, one output
// row over the interleaved bytes. Contiguous, so it vectorises; one clone per instruction set.
__attribute__((target_clones("avx2", "default"))) void weighted_rows(const std::uint8_t* __restrict rows,
                                                                     std::ptrdiff_t row_stride,
                                                                     const float* __restrict weights, int count,
                                                                     int length, float* __restrict out) {
  const float first = weights[0];
  for (int j = 0; j < length; ++j) out[j] = first * static_cast<float>(rows[j]);
  for (int k = 1; k < count; ++k) {
    const std::uint8_t* __restrict row = rows + k * row_stride;
    const float weight = weights[k];
    for (int j = 0; j < length; ++j) out[j] += weight * static_cast<float>(row[j]);
  }
}

}  // namespace

void resample_normalised(const std::uint8_t* rgb, int row_pixels, SourceRegion region, const ResampleTarget& target) {
  const AxisTaps rows = axis_taps(region.height, target.height, target.window_y, target.window_height);
  const AxisTaps columns = axis_taps(region.width, target.width, target.window_x, target.window_width);
  // The vertical pass covers only the columns the window's horizontal taps read.
  const int column_begin = columns.first.front();
  const int column_end = columns.first.back() + columns.count.back();
  const int length = (column_end - column_begin) * 3;
  std::vector<float> line(static_cast<std::size_t>(length));
  const std::ptrdiff_t row_stride = static_cast<std::ptrdiff_t>(row_pixels) * 3;
  const std::ptrdiff_t plane = static_cast<std::ptrdiff_t>(target.window_height) * target.window_width;
  const std::uint8_t* origin = rgb + region.y * row_stride + static_cast<std::ptrdiff_t>(region.x + column_begin) * 3;
  for (int i = 0; i < target.window_height; ++i) {
    weighted_rows(origin + rows.first[static_cast<std::size_t>(i)] * row_stride, row_stride,
                  &rows.weights[static_cast<std::size_t>(i) * rows.stride], rows.count[static_cast<std::size_t>(i)],
                  length, line.data());
    float* out = target.planar + static_cast<std::ptrdiff_t>(i) * target.window_width;
    for (int o = 0; o < target.window_width; ++o) {
      const float* weights = &columns.weights[static_cast<std::size_t>(o) * columns.stride];
      const float* pixel = &line[static_cast<std::size_t>(columns.first[static_cast<std::size_t>(o)] - column_begin) * 3];
      float r = 0, g = 0, b = 0;
      for (int k = 0; k < columns.count[static_cast<std::size_t>(o)]; ++k, pixel += 3) {
        r += weights[k] * pixel[0];
        g += weights[k] * pixel[1];
        b += weights[k] * pixel[2];
      }
      const int at = target.flip ? target.window_width - 1 - o : o;
      out[at] = (r - target.mean[0]) * target.inv_std[0];
      out[plane + at] = (g - target.mean[1]) * target.inv_std[1];
      out[2 * plane + at] = (b - target.mean[2]) * target.inv_std[2];
    }
  }
}

}  // namespace ql::ilsvrc12
