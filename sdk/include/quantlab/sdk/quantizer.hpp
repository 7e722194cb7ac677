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
};

}  // namespace ql
