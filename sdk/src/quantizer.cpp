// The affine grid's arithmetic, in the order and precision of onnxruntime's QuantizeLinear and
// DequantizeLinear (float32 division, rounding half to even, integer bounds), so that a network
// whose quantisers compute through it gives the same codes in QuantLab and in the exported model.
#include "quantlab/sdk/quantizer.hpp"

#include "quantlab/sdk/error.hpp"

#include <torch/types.h>

#include <cmath>
#include <numeric>

namespace ql {

at::Tensor quantize_affine(const at::Tensor& input, const AffineGrid& grid) {
  QL_CHECK(grid.low <= grid.high, "affine grid: low {} is above high {}", grid.low, grid.high);
  QL_CHECK(grid.scale > 0 && std::isfinite(grid.scale), "affine grid: scale {} is not positive", grid.scale);
  const at::Tensor x = input.to(torch::kFloat32);
  const at::Tensor shifted = grid.offset != 0.0f ? x - torch::tensor(grid.offset) : x;
  at::Tensor scale = torch::tensor(grid.scale);
  if (grid.range == AffineGrid::Range::max_abs) {
    at::Tensor largest;
    if (grid.per_sample && shifted.dim() >= 2) {
      std::vector<std::int64_t> dims(static_cast<std::size_t>(shifted.dim() - 1));
      std::iota(dims.begin(), dims.end(), 1);
      largest = shifted.abs().amax(dims, /*keepdim=*/true);
    } else {
      largest = shifted.abs().max();
    }
    scale = largest * scale;
    scale = torch::where(scale > 0, scale, torch::ones_like(scale));
  }
  const auto zero_point = static_cast<double>(grid.zero_point);
  const at::Tensor codes = torch::clamp(torch::round(shifted / scale) + zero_point, static_cast<double>(grid.low),
                                        static_cast<double>(grid.high));
  return ((codes - zero_point) * scale).to(input.scalar_type());
}

}  // namespace ql
