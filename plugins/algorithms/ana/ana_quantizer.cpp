#include "ana_quantizer.hpp"

#include "quantlab/sdk/error.hpp"

#include <torch/autograd.h>
#include <torch/types.h>

#include <cmath>

namespace ql::ana {

Noise parse_noise(const std::string& name) {
  if (name == "uniform") return Noise::uniform;
  if (name == "triangular") return Noise::triangular;
  if (name == "normal") return Noise::normal;
  if (name == "logistic") return Noise::logistic;
  throw Error(fmt::format("unknown noise '{}' (uniform, triangular, normal, logistic)", name));
}

Strategy parse_strategy(const std::string& name) {
  if (name == "expectation") return Strategy::expectation;
  if (name == "mode") return Strategy::mode;
  if (name == "random") return Strategy::random;
  throw Error(fmt::format("unknown strategy '{}' (expectation, mode, random)", name));
}

Staircase staircase_from_spec(std::int64_t nbits, bool is_signed, bool balanced, double eps) {
  QL_CHECK(nbits >= 1 && nbits <= 16, "nbits must be in [1, 16], got {}", nbits);
  QL_CHECK(eps > 0, "eps must be positive, got {}", eps);
  std::vector<double> integers;
  for (std::int64_t i = 0; i < (std::int64_t{1} << nbits); ++i) integers.push_back(static_cast<double>(i));
  if (is_signed) {
    for (double& v : integers) v -= static_cast<double>(std::int64_t{1} << (nbits - 1));
    if (balanced) integers.erase(integers.begin());
  }
  QL_CHECK(integers.size() >= 2, "the spec (nbits {}, signed {}, balanced {}) gives a single level", nbits,
           is_signed, balanced);
  Staircase s;
  for (std::size_t i = 0; i < integers.size(); ++i) {
    s.levels.push_back(eps * integers[i]);
    if (i + 1 < integers.size()) s.thresholds.push_back(eps * (integers[i] + 0.5));
  }
  return s;
}

Staircase staircase_from_lists(std::vector<double> thresholds, std::vector<double> levels) {
  QL_CHECK(levels.size() >= 2 && thresholds.size() + 1 == levels.size(),
           "expected K levels and K - 1 thresholds, got {} levels and {} thresholds", levels.size(),
           thresholds.size());
  for (std::size_t i = 1; i < levels.size(); ++i) QL_CHECK(levels[i] > levels[i - 1], "levels must increase");
  for (std::size_t i = 1; i < thresholds.size(); ++i) {
    QL_CHECK(thresholds[i] > thresholds[i - 1], "thresholds must increase");
  }
  return {std::move(levels), std::move(thresholds)};
}

at::Tensor noise_cdf(const at::Tensor& z, Noise noise, double sigma) {
  switch (noise) {
    case Noise::uniform:
      return (0.5 * (z / sigma + 1.0)).clamp(0.0, 1.0);
    case Noise::triangular: {
      const at::Tensor u = (z / sigma).clamp(-1.0, 1.0);
      return 0.5 * (1.0 + u.sign() * u.abs() * (2.0 - u.abs()));
    }
    case Noise::normal:
      return 0.5 * (1.0 + torch::erf(z / (sigma * M_SQRT2)));
    case Noise::logistic:
      return torch::sigmoid(z / sigma);
  }
  return z;
}

at::Tensor noise_pdf(const at::Tensor& z, Noise noise, double sigma) {
  switch (noise) {
    case Noise::uniform:
      return (z.abs() <= sigma).to(z.scalar_type()) / (2.0 * sigma);
    case Noise::triangular:
      return (1.0 - (z / sigma).abs()).clamp_min(0.0) / sigma;
    case Noise::normal:
      return torch::exp(-0.5 * (z / sigma).square()) / (sigma * std::sqrt(2.0 * M_PI));
    case Noise::logistic: {
      const at::Tensor s = torch::sigmoid(z / sigma);
      return s * (1.0 - s) / sigma;
    }
  }
  return z;
}

namespace {

// The probability that each step is on: the hard step when `sigma` is 0.
at::Tensor step_on(const at::Tensor& x, double threshold, const AnaParameters& p, double sigma) {
  const at::Tensor z = x - (p.mu + threshold);
  if (sigma <= 0) return (z >= 0).to(x.scalar_type());
  return noise_cdf(z, p.noise, sigma);
}

at::Tensor forward_value(const at::Tensor& x, const Staircase& s, const AnaParameters& p, bool noisy) {
  const double sigma = noisy ? p.forward_sigma : 0.0;
  const std::size_t steps = s.thresholds.size();
  if (sigma > 0 && p.noise == Noise::uniform && p.strategy == Strategy::expectation) {
    // P(step i on) = clamp(x/(2σ) + 1/2 - (μ + t_i)/(2σ), 0, 1): one scaled copy of x, then
    // an add and an in-place clamp per step, accumulated in place (the common case, kept to
    // the fewest passes over the weights).
    const at::Tensor scaled = x.mul(0.5 / sigma);
    at::Tensor y;
    for (std::size_t i = 0; i < steps; ++i) {
      const double offset = 0.5 - (p.mu + s.thresholds[i]) * 0.5 / sigma;
      const double height = s.levels[i + 1] - s.levels[i];
      at::Tensor on = scaled.add(offset).clamp_(0.0, 1.0);
      if (i == 0) y = on.mul_(height);
      else y.add_(on, height);
    }
    return y.add_(s.levels[0]);
  }
  if (p.strategy == Strategy::expectation || sigma <= 0) {
    // q_0 + Σ_i (q_i - q_{i-1}) P(step i on): one fused pass per threshold.
    at::Tensor y = torch::full_like(x, s.levels[0]);
    for (std::size_t i = 0; i < steps; ++i) y.add_(step_on(x, s.thresholds[i], p, sigma), s.levels[i + 1] - s.levels[i]);
    return y;
  }
  std::vector<at::Tensor> on;
  for (std::size_t i = 0; i < steps; ++i) on.push_back(step_on(x, s.thresholds[i], p, sigma));
  at::Tensor index;
  if (p.strategy == Strategy::random) {
    // The level whose segment of the cumulative distribution holds a uniform draw.
    const at::Tensor u = torch::rand_like(x);
    index = torch::zeros_like(x, torch::kLong);
    for (const at::Tensor& c : on) index += (c > u).to(torch::kLong);
  } else {
    // The most likely level: pmf_k = P(step k on) - P(step k+1 on).
    std::vector<at::Tensor> pmf;
    for (std::size_t k = 0; k <= steps; ++k) {
      const at::Tensor upper = k == 0 ? torch::ones_like(x) : on[k - 1];
      const at::Tensor lower = k == steps ? torch::zeros_like(x) : on[k];
      pmf.push_back(upper - lower);
    }
    index = std::get<1>(torch::stack(pmf).max(0));
  }
  return torch::tensor(s.levels, x.options()).index({index});
}

class AnaFunction : public torch::autograd::Function<AnaFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const Staircase* staircase,
                            const AnaParameters* parameters, bool noisy) {
    ctx->save_for_backward({x});
    ctx->saved_data["staircase"] = reinterpret_cast<std::int64_t>(staircase);
    // The backward of this step uses this step's noise, whatever the schedule does next.
    ctx->saved_data["mu"] = parameters->mu;
    ctx->saved_data["sigma"] = parameters->backward_sigma;
    ctx->saved_data["noise"] = static_cast<std::int64_t>(parameters->noise);
    return forward_value(x, *staircase, *parameters, noisy);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const at::Tensor x = ctx->get_saved_variables()[0];
    const auto* s = reinterpret_cast<const Staircase*>(ctx->saved_data["staircase"].toInt());
    const double mu = ctx->saved_data["mu"].toDouble(), sigma = ctx->saved_data["sigma"].toDouble();
    const auto noise = static_cast<Noise>(ctx->saved_data["noise"].toInt());
    if (sigma <= 0) return {torch::zeros_like(x), at::Tensor(), at::Tensor(), at::Tensor()};
    at::Tensor jacobian;
    if (noise == Noise::uniform) {
      // g = 1/(2σ) on |x - μ - t_i| <= σ, i.e. where |x/(2σ) - (μ + t_i)/(2σ)| <= 1/2.
      const at::Tensor scaled = x.mul(0.5 / sigma);
      for (std::size_t i = 0; i < s->thresholds.size(); ++i) {
        const double height = (s->levels[i + 1] - s->levels[i]) * 0.5 / sigma;
        at::Tensor inside = scaled.sub((mu + s->thresholds[i]) * 0.5 / sigma).abs_().le_(0.5);  // 1.0 or 0.0
        if (i == 0) jacobian = inside.mul_(height);
        else jacobian.add_(inside, height);
      }
    } else {
      jacobian = torch::zeros_like(x);
      for (std::size_t i = 0; i < s->thresholds.size(); ++i) {
        jacobian.add_(noise_pdf(x - (mu + s->thresholds[i]), noise, sigma), s->levels[i + 1] - s->levels[i]);
      }
    }
    return {jacobian.mul_(grad[0]), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor ana_quantize(const at::Tensor& x, const Staircase& staircase, const AnaParameters& parameters,
                        bool noisy) {
  // The staircase outlives the graph: the quantiser that owns it is held by the layer for the
  // whole run, and the backward pass follows the forward of the same step.
  return AnaFunction::apply(x, &staircase, &parameters, noisy);
}

at::Tensor hard_staircase(const at::Tensor& x, const Staircase& staircase) {
  torch::NoGradGuard no_grad;
  return forward_value(x, staircase, AnaParameters{}, false);
}

}  // namespace ql::ana
