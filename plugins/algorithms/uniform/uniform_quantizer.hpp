// Uniform b-bit fake quantisation of a tensor (docs/algorithms/uniform.md): Quantifind's
// BitQuantizer (bit-exact), and the symmetric and asymmetric min-max grids, per tensor or
// per slice along dimension 0 (output channels of a weight; samples of an input batch).
//
//   auto q = quantize_uniform(w, {UniformScheme::quantifind, 4, /*per_channel=*/false});
//   UniformCodes codes = encode_uniform(w, options);  // integers, scale, zero point
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace ql::uniform {

enum class UniformScheme {
  quantifind,  ///< s = 2M/(2^b-1), ints in [-2^(b-1), 2^(b-1)-1], zero point 0
  symmetric,   ///< s = M/(2^(b-1)-1), ints in [-(2^(b-1)-1), 2^(b-1)-1] (balanced)
  asymmetric,  ///< s = (max-min)/(2^b-1), zero point round(-min/s), codes in [0, 2^b-1]
};

/// Parses "quantifind", "symmetric" or "asymmetric".
UniformScheme parse_scheme(const std::string& name);

struct UniformOptions {
  UniformScheme scheme = UniformScheme::quantifind;
  int bits = 8;
  bool per_channel = false;  ///< one scale per slice along dim 0 (tensors of rank >= 2)
};

/// Integer codes with their scale and zero point: value = (codes - zero_point) * scale.
struct UniformCodes {
  at::Tensor codes;       ///< int64, the shape of the input
  at::Tensor scale;       ///< float64, one per tensor or per slice (shape [C, 1, ...])
  at::Tensor zero_point;  ///< int64, same shape as scale
};

/// The codes of `x`. A slice whose range is zero gets scale 0 and codes 0; quantize_uniform
/// keeps such a slice as it is.
UniformCodes encode_uniform(const at::Tensor& x, const UniformOptions& options);

/// The quantised values of `x` in x's dtype (rounding half to even, as torch.round).
at::Tensor quantize_uniform(const at::Tensor& x, const UniformOptions& options);

}  // namespace ql::uniform
