#include "gpfq.hpp"

#include "quantlab/sdk/error.hpp"

#include <torch/nn/functional/fold.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

namespace ql::greedy {

at::Tensor alphabet(double bits, double radius, bool with_zero) {
  QL_CHECK(bits > 0 && bits <= 16, "bits must be in (0, 16], got {}", bits);
  const auto atoms = static_cast<std::int64_t>(std::llround(std::pow(2.0, bits)));
  QL_CHECK(atoms >= 2, "bits = {} gives fewer than 2 atoms", bits);
  const at::Tensor levels = torch::linspace(-1.0, 1.0, atoms, torch::kFloat64) * radius;
  if (!with_zero || atoms % 2 == 1) return levels;
  return std::get<0>(torch::cat({levels, torch::zeros({1}, torch::kFloat64)}).sort());
}

double radius_statistic(RadiusRule rule, const at::Tensor& weight) {
  QL_CHECK(weight.dim() >= 2 && weight.numel() > 0, "radius_statistic: expected a weight [out, ...], got {} dimensions", weight.dim());
  const at::Tensor magnitude = weight.detach().abs().to(torch::kFloat64);
  if (rule == RadiusRule::layer_median) return magnitude.flatten().median().item<double>();
  return std::get<0>(magnitude.flatten(1).max(1)).mean().item<double>();
}

IntegerForm alphabet_integers(const at::Tensor& indices, const at::Tensor& atoms) {
  QL_CHECK(atoms.size(0) >= 2, "an alphabet of {} atoms has no step", atoms.size(0));
  // Every alphabet here is symmetric, and each atom an integer multiple of the smallest positive
  // one: the step (odd counts, zero included) or half of it (even counts, with or without zero).
  const at::Tensor positive = atoms.masked_select(atoms > 0);
  QL_CHECK(positive.numel() > 0, "an alphabet without a positive atom has no integer form");
  const double unit = positive.min().item<double>();
  const at::Tensor integers = (atoms / unit).round().to(torch::kInt64);
  QL_CHECK(torch::allclose(integers.to(torch::kFloat64) * unit, atoms, 1e-9, 1e-12 * std::abs(unit)),
           "the alphabet is not a set of multiples of {}", unit);
  return {integers.index_select(0, indices.flatten().to(torch::kInt64)).view(indices.sizes()),
          torch::tensor({static_cast<float>(unit)}), torch::zeros({1}, torch::kInt64), -1};
}

at::Tensor nearest_atom_index(const at::Tensor& values, const at::Tensor& atoms) {
  // Midpoints between neighbouring atoms; a value on a midpoint belongs to the lower atom,
  // which is what bucketize with right = false counts: the midpoints strictly below it.
  const at::Tensor here = atoms.to(values.device());
  const at::Tensor midpoints = (here.slice(0, 1) + here.slice(0, 0, -1)) / 2;
  return torch::bucketize(values.to(torch::kFloat64).contiguous(), midpoints, /*out_int32=*/false, /*right=*/false);
}

at::Tensor round_to_alphabet(const at::Tensor& values, const at::Tensor& atoms) {
  return atoms.to(values.device()).index_select(0, nearest_atom_index(values, atoms).flatten()).view(values.sizes());
}

Grams::Grams(std::int64_t groups, std::int64_t features, c10::Device device)
    : qx(torch::zeros({groups, features, features}, torch::dtype(torch::kFloat64).device(device))),
      qq(torch::zeros_like(qx)),
      xx(torch::zeros_like(qx)) {}

void Grams::add(const at::Tensor& x, const at::Tensor& x_tilde) {
  QL_CHECK(x.sizes() == x_tilde.sizes() && x.dim() == 3 && x.size(0) == qx.size(0) && x.size(2) == qx.size(1),
           "Grams::add: expected x and x̃ of shape [{}, R, {}]", qx.size(0), qx.size(1));
  const at::Tensor a = x.to(torch::kFloat64);
  if (x.is_same(x_tilde)) {
    // The first layer sees the same data in both networks: one product serves all three.
    const at::Tensor gram = torch::bmm(a.transpose(1, 2), a);
    qx.add_(gram);
    qq.add_(gram);
    xx.add_(gram);
  } else {
    const at::Tensor b = x_tilde.to(torch::kFloat64);
    const at::Tensor bt = b.transpose(1, 2);
    qx.add_(torch::bmm(bt, a));
    qq.add_(torch::bmm(bt, b));
    xx.add_(torch::bmm(a.transpose(1, 2), a));
  }
  rows += x.size(1);
}

namespace {

// The step of docs/algorithms/greedy.md for feature t of every neuron: `inner` = <X̃_t, u_{t-1}>,
// `along` = <X̃_t, X_t>, `norm2` = ||X̃_t||² (each per group, inner per neuron too).
at::Tensor step(const at::Tensor& w_t, const at::Tensor& inner, const at::Tensor& along, const at::Tensor& norm2,
                const at::Tensor& atoms) {
  const at::Tensor v = (inner + along.unsqueeze(1) * w_t) / norm2.clamp_min(1e-300).unsqueeze(1);
  const at::Tensor target = torch::where(inner.abs() < 1e-10, w_t, v);
  const at::Tensor q = round_to_alphabet(target, atoms);
  // ||X̃_t|| < 1e-16: the feature is zero on the data, its weight does not matter.
  return torch::where((norm2 < 1e-32).unsqueeze(1), torch::zeros_like(q), q);
}

}  // namespace

at::Tensor gpfq_from_grams(const at::Tensor& w_in, const Grams& grams, const at::Tensor& atoms) {
  const at::Tensor w = w_in.to(torch::kFloat64);
  QL_CHECK(w.dim() == 3 && w.size(0) == grams.qx.size(0) && w.size(1) == grams.qx.size(1),
           "gpfq_from_grams: weights of shape [{}, {}, F] expected", grams.qx.size(0), grams.qx.size(1));
  const std::int64_t n = w.size(1);
  at::Tensor q = torch::zeros_like(w);
  const at::Tensor along = grams.qx.diagonal(0, 1, 2);  // [G, N]
  const at::Tensor norm2 = grams.qq.diagonal(0, 1, 2);
  for (std::int64_t t = 0; t < n; ++t) {
    at::Tensor inner;
    if (t == 0) {
      inner = torch::zeros({w.size(0), w.size(2)}, w.options());
    } else {
      // [G, 1, t] x [G, t, F] -> [G, F]
      inner = (torch::bmm(grams.qx.select(1, t).slice(1, 0, t).unsqueeze(1), w.slice(1, 0, t)) -
               torch::bmm(grams.qq.select(1, t).slice(1, 0, t).unsqueeze(1), q.slice(1, 0, t)))
                  .squeeze(1);
    }
    q.select(1, t).copy_(step(w.select(1, t), inner, along.select(1, t), norm2.select(1, t), atoms));
  }
  return q;
}

at::Tensor gpfq_on_data(const at::Tensor& w_in, const at::Tensor& x_in, const at::Tensor& xq_in,
                        const at::Tensor& atoms) {
  const at::Tensor w = w_in.to(torch::kFloat64), x = x_in.to(torch::kFloat64), xq = xq_in.to(torch::kFloat64);
  const std::int64_t n = w.size(1);
  at::Tensor q = torch::zeros_like(w);
  at::Tensor u = torch::zeros({w.size(0), x.size(1), w.size(2)}, w.options());  // [G, R, F]
  for (std::int64_t t = 0; t < n; ++t) {
    const at::Tensor x_t = x.select(2, t), xq_t = xq.select(2, t);  // [G, R]
    const at::Tensor inner = torch::bmm(xq_t.unsqueeze(1), u).squeeze(1);
    const at::Tensor q_t = step(w.select(1, t), inner, (xq_t * x_t).sum(1), xq_t.square().sum(1), atoms);
    q.select(1, t).copy_(q_t);
    u += x_t.unsqueeze(2) * w.select(1, t).unsqueeze(1) - xq_t.unsqueeze(2) * q_t.unsqueeze(1);
  }
  return q;
}

Residual residual(const at::Tensor& w_in, const at::Tensor& q_in, const Grams& grams) {
  const at::Tensor w = w_in.to(torch::kFloat64), q = q_in.to(torch::kFloat64);
  // ||Xw||² = tr(wᵀ XᵀX w); <X̃q, Xw> = tr(qᵀ X̃ᵀX w); ||X̃q||² = tr(qᵀ X̃ᵀX̃ q).
  const double ww = (w * torch::bmm(grams.xx, w)).sum().item<double>();
  const double qw = (q * torch::bmm(grams.qx, w)).sum().item<double>();
  const double qq = (q * torch::bmm(grams.qq, q)).sum().item<double>();
  Residual r;
  r.error = std::sqrt(std::max(0.0, ww - 2 * qw + qq));
  r.reference = std::sqrt(std::max(0.0, ww));
  return r;
}

at::Tensor conv_rows(const at::Tensor& input, const nn::Conv2dOptions& o, ConvScheme scheme,
                     std::int64_t max_positions, std::uint64_t seed) {
  namespace F = torch::nn::functional;
  // [B, C*kh*kw, L], channel-major: feature = c * kh*kw + i * kw + j.
  at::Tensor patches = F::unfold(input, F::UnfoldFuncOptions({o.kernel_size[0], o.kernel_size[1]})
                                            .dilation({o.dilation[0], o.dilation[1]})
                                            .padding({o.padding[0], o.padding[1]})
                                            .stride({o.stride[0], o.stride[1]}));
  if (max_positions > 0 && patches.size(2) > max_positions) {
    std::mt19937_64 engine(seed);
    std::vector<std::int64_t> positions(static_cast<std::size_t>(patches.size(2)));
    std::iota(positions.begin(), positions.end(), 0);
    std::shuffle(positions.begin(), positions.end(), engine);
    positions.resize(static_cast<std::size_t>(max_positions));
    patches = patches.index_select(2, torch::tensor(positions, torch::kInt64).to(patches.device()));
  }
  const std::int64_t batch = patches.size(0), positions = patches.size(2);
  const std::int64_t kernel = o.kernel_size[0] * o.kernel_size[1];
  if (scheme == ConvScheme::full) {
    const std::int64_t features = o.in_channels / o.groups * kernel;
    return patches.view({batch, o.groups, features, positions})
        .permute({1, 0, 3, 2})
        .reshape({o.groups, batch * positions, features});
  }
  return patches.view({batch, o.in_channels, kernel, positions})
      .permute({1, 0, 3, 2})
      .reshape({o.in_channels, batch * positions, kernel});
}

at::Tensor conv_neurons(const at::Tensor& weight, const nn::Conv2dOptions& o, ConvScheme scheme) {
  const std::int64_t filters = o.out_channels / o.groups, per_group = o.in_channels / o.groups;
  const std::int64_t kernel = o.kernel_size[0] * o.kernel_size[1];
  const at::Tensor grouped = weight.reshape({o.groups, filters, per_group, kernel});
  if (scheme == ConvScheme::full) return grouped.reshape({o.groups, filters, per_group * kernel}).transpose(1, 2);
  // Input channel c = g * per_group + c': its neurons are the filters of group g.
  return grouped.permute({0, 2, 3, 1}).reshape({o.in_channels, kernel, filters});
}

at::Tensor conv_weight(const at::Tensor& neurons, const nn::Conv2dOptions& o, ConvScheme scheme) {
  const std::int64_t filters = o.out_channels / o.groups, per_group = o.in_channels / o.groups;
  const std::int64_t kernel = o.kernel_size[0] * o.kernel_size[1];
  const at::Tensor grouped = scheme == ConvScheme::full
                                 ? neurons.transpose(1, 2).reshape({o.groups, filters, per_group, kernel})
                                 : neurons.reshape({o.groups, per_group, kernel, filters}).permute({0, 3, 1, 2});
  return grouped.reshape({o.out_channels, per_group, o.kernel_size[0], o.kernel_size[1]}).contiguous();
}

}  // namespace ql::greedy
