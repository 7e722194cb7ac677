// A quantiser maps a tensor to its quantised value. It fills a slot of a quantisable layer
// (weights or outputs) or of a network (inputs) and defines its own backward, e.g. straight-
// through or ANA's expected gradient, through autograd.
//
//   class Sign : public ql::Quantizer {
//     torch::Tensor forward(const torch::Tensor& x) override { return x.sign(); }
//   };
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace ql {

class Quantizer {
 public:
  virtual ~Quantizer();
  /// The quantised value of `x`, differentiable as the quantiser defines.
  virtual at::Tensor forward(const at::Tensor& x) = 0;
  /// One line for listings and logs (optional).
  virtual std::string describe() const { return "quantizer"; }
};

}  // namespace ql
