// A quantiser maps a tensor to its quantised value. It fills a slot of a quantisable layer
// (weights or outputs) or of a network (inputs) and defines its own backward, e.g. straight-
// through or ANA's expected gradient, through autograd.
//
//   class Sign : public ql::Quantizer {
//     torch::Tensor forward(const torch::Tensor& x) override { return x.sign(); }
//   };
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>

namespace ql {

/// A quantised tensor as integers: value = (codes - zero_point) · scale, with one scale for
/// the tensor or one per slice along `axis` (what ONNX's DequantizeLinear computes).
struct IntegerForm {
  at::Tensor codes;       ///< an integer tensor of the quantised tensor's shape
  at::Tensor scale;       ///< float32: one element, or one per slice along `axis` (1-D)
  at::Tensor zero_point;  ///< integer, the shape of `scale`
  std::int64_t axis = -1; ///< -1: one scale for the whole tensor
};

/// A quantiser of activations (a layer's outputs, a network's inputs) as ONNX's
/// QuantizeLinear -> DequantizeLinear computes it, in float32 (docs/export.md):
///   s    = scale                            (Range::fixed)
///          scale * max|x - offset|          (Range::max_abs: over the tensor, or over each
///                                            sample when per_sample; 1 where that max is 0)
///   code = clamp(round_half_even((x - offset) / s) + zero_point, low, high)
///   y    = (code - zero_point) * s
struct AffineGrid {
  enum class Range { fixed, max_abs };
  Range range = Range::fixed;
  float scale = 1.0f;
  std::int64_t zero_point = 0;  ///< Range::fixed only; max_abs grids are symmetric (0)
  std::int64_t low = 0;
  std::int64_t high = 0;
  float offset = 0.0f;
  bool per_sample = false;  ///< max_abs over each slice along dimension 0
};

/// y of `grid` for `x` (float32), bit for bit what onnxruntime computes for the same grid.
at::Tensor quantize_affine(const at::Tensor& x, const AffineGrid& grid);

class Quantizer {
 public:
  virtual ~Quantizer();
  /// The quantised value of `x`, differentiable as the quantiser defines.
  virtual at::Tensor forward(const at::Tensor& x) = 0;
  /// One line for listings and logs (optional).
  virtual std::string describe() const { return "quantizer"; }
  /// (optional) forward(x) as integers, for export (docs/export.md); nothing when this
  /// quantiser has no such form, and the export then writes its value in float.
  virtual std::optional<IntegerForm> integer_form(const at::Tensor& /*x*/) { return std::nullopt; }
  /// (optional) This quantiser as an affine grid, for the export of quantised activations and
  /// inputs; nothing when it has none, and the export then refuses the layer.
  virtual std::optional<AffineGrid> affine_grid() const { return std::nullopt; }
};

}  // namespace ql
