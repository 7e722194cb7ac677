#include "uniform_quantizer.hpp"

#include "quantlab/sdk/error.hpp"

#include <torch/types.h>

#include <cmath>

namespace ql::uniform {

UniformScheme parse_scheme(const std::string& name) {
  if (name == "quantifind") return UniformScheme::quantifind;
  if (name == "symmetric") return UniformScheme::symmetric;
  if (name == "asymmetric") return UniformScheme::asymmetric;
  throw Error("unknown uniform scheme '" + name + "'");
}

namespace {

// Reduces over every dimension but 0 (per channel) or over all (per tensor), keeping dims
// so the result broadcasts against x.
at::Tensor reduce(const at::Tensor& x, bool per_channel, bool maximum) {
  if (per_channel && x.dim() >= 2) {
    std::vector<std::int64_t> dims;
    for (std::int64_t d = 1; d < x.dim(); ++d) dims.push_back(d);
    return maximum ? x.amax(dims, /*keepdim=*/true) : x.amin(dims, /*keepdim=*/true);
  }
  return maximum ? x.max() : x.min();
}

}  // namespace

UniformCodes encode_uniform(const at::Tensor& input, const UniformOptions& options) {
  QL_CHECK(options.bits >= 2 && options.bits <= 32, "uniform quantiser: bits must be in [2, 32], got {}",
           options.bits);
  // Double precision: at 24+ bits the grid is finer than float32 resolves.
  const at::Tensor x = input.detach().to(torch::kFloat64);
  const double levels = std::ldexp(1.0, options.bits) - 1.0;  // 2^b - 1 steps
  const double half = std::ldexp(1.0, options.bits - 1);      // 2^(b-1)
  UniformCodes out;
  if (options.scheme == UniformScheme::asymmetric) {
    const at::Tensor low = reduce(x, options.per_channel, false);
    const at::Tensor high = reduce(x, options.per_channel, true);
    out.scale = (high - low) / levels;
    const at::Tensor safe = torch::where(out.scale > 0, out.scale, torch::ones_like(out.scale));
    out.zero_point = torch::where(out.scale > 0, torch::round(-low / safe), torch::zeros_like(low));
    out.codes = torch::clamp(torch::round(x / safe) + out.zero_point, 0.0, levels);
    out.codes = torch::where(out.scale > 0, out.codes, torch::zeros_like(out.codes));
  } else {
    const at::Tensor magnitude = reduce(x.abs(), options.per_channel, true);
    double low = -half, high = half - 1.0;  // Quantifind's asymmetric signed grid
    if (options.scheme == UniformScheme::quantifind) {
      out.scale = 2.0 * magnitude / levels;
    } else {
      out.scale = magnitude / (half - 1.0);
      low = -(half - 1.0);
    }
    out.zero_point = torch::zeros_like(out.scale);
    const at::Tensor safe = torch::where(out.scale > 0, out.scale, torch::ones_like(out.scale));
    out.codes = torch::clamp(torch::round(x / safe), low, high);
  }
  out.codes = out.codes.to(torch::kInt64);
  out.zero_point = out.zero_point.to(torch::kInt64);
  return out;
}

at::Tensor quantize_uniform(const at::Tensor& x, const UniformOptions& options) {
  const UniformCodes c = encode_uniform(x, options);
  const at::Tensor values = (c.codes.to(torch::kFloat64) - c.zero_point.to(torch::kFloat64)) * c.scale;
  // A zero-range slice (scale 0) is returned as it was.
  const at::Tensor kept = torch::where(c.scale > 0, values, x.detach().to(torch::kFloat64));
  return kept.to(x.scalar_type());
}

}  // namespace ql::uniform
