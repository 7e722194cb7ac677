// Adaptive level sets (docs/algorithms/nuqsgd.md, "Adapting the levels"): statistics of normalised gradient buckets, the
// density models built from them, the variance objective V(L) of stochastic rounding with
// levels L, and the two adaptations: ALQ (coordinate descent on the levels, closed-form steps)
// and AMQ (the multiplier p of exponential levels ±p^j).
//
// A density is kept as probability mass on equal bins of [-1, 1] (the reference evaluates its
// norm-based mixture the same way), so one set of routines serves both models:
// norm-less  f = TruncNormal(mean z, pooled std z) over all buckets;
// norm-based f = Σ_B (n_B / Σ n) TruncNormal(mean_B, std_B) over the buckets with the largest norms.
//
//   BucketStatistics stats;  stats.add(gradient, 8192);          // on a few minibatch gradients
//   Density f = density(stats, /*norm_based=*/true, 350);
//   std::vector<double> levels = alq_levels(8, f, 30);           // 3 bits
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace ql::nuqsgd {

struct BucketStatistics {
  struct Bucket {
    double mean, std, norm;
  };
  std::vector<Bucket> buckets;  ///< every full bucket seen
  double sum_z = 0.0, sum_weighted_variance = 0.0, count = 0.0;

  /// Adds the full buckets of a flat gradient (the partial last one is left out, as it travels
  /// unquantised).
  void add(const at::Tensor& gradient, std::int64_t bucket_size);
  bool empty() const { return buckets.empty(); }
};

struct Density {
  std::vector<double> mass;  ///< per bin of [-1, 1], summing to 1
  double bin_width() const { return 2.0 / static_cast<double>(mass.size()); }
  double centre(std::size_t k) const { return -1.0 + (static_cast<double>(k) + 0.5) * bin_width(); }
};

/// The norm-less (`norm_based` false) or norm-based model of `stats` on `bins` bins;
/// `largest` > 0 keeps only that many buckets with the largest norms for the mixture.
Density density(const BucketStatistics& stats, bool norm_based, std::int64_t largest = 0, std::int64_t bins = 8192);

/// V(L) = Σ_j ∫_{l_j}^{l_{j+1}} (r - l_j)(l_{j+1} - r) f(r) dr for ascending levels -1 .. 1.
double variance_objective(const std::vector<double>& levels, const Density& f);

/// How a coordinate-descent sweep moves a level l between its neighbours a < l < b
/// (docs/algorithms/nuqsgd.md, ALQ):
/// - closed_form: to l* = F^{-1}(F(b) - ∫_a^b (r - a) f / (b - a)) (the reference's `nuq_inv`);
/// - gradient: 10 steps of gradient descent with rate 1 on a central difference of V_loc (step
///   (b - a) / 1000), from l (the paper runs);
/// - projected: ALQ-G's one step per sweep, sign(g) min(|0.1 g|, δ/2), δ = min(l - a, b - l),
///   with g = dV_loc/dl = ∫_a^l (r - a) f - ∫_l^b (b - r) f.
/// Whatever the update, a move is kept only if it does not raise V, and levels stay strictly
/// inside (a, b).
enum class AlqUpdate { closed_form, gradient, projected };

/// V_loc(l) = ∫_a^l (r - a)(l - r) f dr + ∫_l^b (r - l)(b - r) f dr: the part of V that l moves.
double local_objective(double a, double l, double b, const Density& f);

/// One coordinate-descent sweep: each interior level in turn.
void alq_sweep(std::vector<double>& levels, const Density& f, AlqUpdate update = AlqUpdate::closed_form);

/// ALQ: `count` levels from the best of three starts (quantiles of f, uniform, exponential
/// with p = 0.5) after `sweeps` sweeps each.
std::vector<double> alq_levels(std::size_t count, const Density& f, int sweeps,
                               AlqUpdate update = AlqUpdate::closed_form);

/// AMQ: exponential levels ±p^j (j = 0 .. count/2 - 1) with the p in (0, 1) that minimises V,
/// found by a grid search refined around the best point.
std::vector<double> amq_levels(std::size_t count, const Density& f, double* multiplier = nullptr);

/// The exponential level set ±p^j, ascending.
std::vector<double> exponential_levels(std::size_t count, double p);

}  // namespace ql::nuqsgd
