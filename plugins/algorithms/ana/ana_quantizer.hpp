// The ANA quantiser (docs/algorithms/ana.md, "Quantiser"): a staircase with levels q_0 < ... < q_{K-1} and
// thresholds t_1 < ... < t_{K-1}, whose input is perturbed by noise of mean μ and scale σ.
// Forward: the expectation over the noise (or the most likely level, or a sampled level);
// backward: Σ_i (q_i - q_{i-1}) g(x - μ - t_i), g the noise density at the backward scale.
// With σ = 0, or whenever autograd is off (validation, test, post-training), the forward is
// the hard staircase; with backward σ = 0 the gradient is zero.
//
//   Staircase ternary = staircase_from_spec(2, /*signed=*/true, /*balanced=*/true, 1.0);
//   AnaParameters p{Noise::uniform, Strategy::expectation, 0.0, 0.5, 0.5};
//   at::Tensor y = ana_quantize(x, ternary, p);   // differentiable in x
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ql::ana {

enum class Noise { uniform, triangular, normal, logistic };
enum class Strategy { expectation, mode, random };

Noise parse_noise(const std::string& name);
Strategy parse_strategy(const std::string& name);

struct Staircase {
  std::vector<double> levels;      ///< K increasing real-valued levels
  std::vector<double> thresholds;  ///< K - 1 increasing thresholds between them
};

/// quantlib's spec: integer levels 0..2^nbits-1, shifted by -2^(nbits-1) when signed, the
/// lowest dropped when balanced; thresholds at the midpoints; everything times eps.
Staircase staircase_from_spec(std::int64_t nbits, bool is_signed, bool balanced, double eps);
/// Explicit levels and thresholds (the 2019 format); throws ql::ConfigError-free ql::Error
/// when they are not increasing or their counts do not match.
Staircase staircase_from_lists(std::vector<double> thresholds, std::vector<double> levels);

struct AnaParameters {
  Noise noise = Noise::uniform;
  Strategy strategy = Strategy::expectation;
  double mu = 0.0;
  double forward_sigma = 0.0;
  double backward_sigma = 0.0;
};

/// G(z): the probability that step z is on, for noise of scale sigma (> 0).
at::Tensor noise_cdf(const at::Tensor& z, Noise noise, double sigma);
/// g(z) = G'(z).
at::Tensor noise_pdf(const at::Tensor& z, Noise noise, double sigma);

/// The quantiser applied to x (any shape); differentiable in x through the custom backward.
/// `noisy` false gives the hard staircase forward (the backward is unchanged).
at::Tensor ana_quantize(const at::Tensor& x, const Staircase& staircase, const AnaParameters& parameters,
                        bool noisy = true);

/// The hard staircase (σ = 0) without autograd.
at::Tensor hard_staircase(const at::Tensor& x, const Staircase& staircase);

}  // namespace ql::ana
