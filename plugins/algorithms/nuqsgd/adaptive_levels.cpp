#include "adaptive_levels.hpp"

#include "quantlab/sdk/error.hpp"

#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace ql::nuqsgd {

void BucketStatistics::add(const at::Tensor& gradient_in, std::int64_t bucket_size) {
  const at::Tensor gradient = gradient_in.to(torch::kCPU, torch::kFloat64).flatten();
  const std::int64_t n = gradient.numel() / bucket_size;
  if (n == 0 || bucket_size < 2) return;
  const at::Tensor full = gradient.slice(0, 0, n * bucket_size).view({n, bucket_size});
  const at::Tensor norms = full.norm(2, 1);
  const at::Tensor z = full / norms.clamp_min(1e-30).unsqueeze(1);
  const at::Tensor means = z.mean(1), stds = z.std(1, /*unbiased=*/true);
  const auto m = means.accessor<double, 1>(), s = stds.accessor<double, 1>(), r = norms.accessor<double, 1>();
  for (std::int64_t b = 0; b < n; ++b) {
    if (r[b] <= 0) continue;
    buckets.push_back({m[b], s[b], r[b]});
    sum_z += m[b] * static_cast<double>(bucket_size);
    sum_weighted_variance += static_cast<double>(bucket_size - 1) * s[b] * s[b];
    count += static_cast<double>(bucket_size);
  }
}

namespace {

double normal_cdf(double x, double mean, double std) { return 0.5 * std::erfc(-(x - mean) / (std * M_SQRT2)); }

// Adds weight x the mass of TruncNormal(mean, std; [-1, 1]) on each bin.
void add_truncated_normal(std::vector<double>& mass, double mean, double std, double weight) {
  std = std::max(std, 1e-12);
  const double total = normal_cdf(1.0, mean, std) - normal_cdf(-1.0, mean, std);
  if (total <= 0) return;
  const double width = 2.0 / static_cast<double>(mass.size());
  double previous = normal_cdf(-1.0, mean, std);
  for (std::size_t k = 0; k < mass.size(); ++k) {
    const double next = normal_cdf(-1.0 + width * static_cast<double>(k + 1), mean, std);
    mass[k] += weight * (next - previous) / total;
    previous = next;
  }
}

// F(x): the mass below x, linear within a bin.
double cdf(const std::vector<double>& cumulative, const Density& f, double x) {
  const double position = (x + 1.0) / f.bin_width();
  if (position <= 0) return 0.0;
  const auto bin = static_cast<std::size_t>(position);
  if (bin >= f.mass.size()) return 1.0;
  const double below = bin == 0 ? 0.0 : cumulative[bin - 1];
  return below + f.mass[bin] * (position - static_cast<double>(bin));
}

// F^{-1}(y) by bisection on the cumulative masses, then linear within the bin.
double inverse_cdf(const std::vector<double>& cumulative, const Density& f, double y) {
  const auto it = std::lower_bound(cumulative.begin(), cumulative.end(), y);
  const auto bin = static_cast<std::size_t>(std::min<std::ptrdiff_t>(it - cumulative.begin(),
                                                                      static_cast<std::ptrdiff_t>(cumulative.size()) - 1));
  const double below = bin == 0 ? 0.0 : cumulative[bin - 1];
  const double fraction = f.mass[bin] > 0 ? std::clamp((y - below) / f.mass[bin], 0.0, 1.0) : 0.5;
  return -1.0 + (static_cast<double>(bin) + fraction) * f.bin_width();
}

std::vector<double> cumulative_of(const Density& f) {
  std::vector<double> c(f.mass.size());
  std::partial_sum(f.mass.begin(), f.mass.end(), c.begin());
  return c;
}

}  // namespace

Density density(const BucketStatistics& stats, bool norm_based, std::int64_t largest, std::int64_t bins) {
  QL_CHECK(!stats.empty(), "no gradient statistics to build a density from");
  Density f;
  f.mass.assign(static_cast<std::size_t>(bins), 0.0);
  if (!norm_based) {
    const double mean = stats.sum_z / stats.count;
    const double std = std::sqrt(stats.sum_weighted_variance / stats.count);
    add_truncated_normal(f.mass, mean, std, 1.0);
  } else {
    std::vector<BucketStatistics::Bucket> chosen = stats.buckets;
    if (largest > 0 && static_cast<std::int64_t>(chosen.size()) > largest) {
      std::nth_element(chosen.begin(), chosen.begin() + largest, chosen.end(),
                       [](const auto& a, const auto& b) { return a.norm > b.norm; });
      chosen.resize(static_cast<std::size_t>(largest));
    }
    double norms = 0;
    for (const auto& b : chosen) norms += b.norm;
    for (const auto& b : chosen) add_truncated_normal(f.mass, b.mean, b.std, b.norm / norms);
  }
  const double total = std::accumulate(f.mass.begin(), f.mass.end(), 0.0);
  for (double& m : f.mass) m /= total;
  return f;
}

double variance_objective(const std::vector<double>& levels, const Density& f) {
  double v = 0.0;
  std::size_t j = 0;
  for (std::size_t k = 0; k < f.mass.size(); ++k) {
    const double r = f.centre(k);
    while (j + 2 < levels.size() && r > levels[j + 1]) ++j;
    v += f.mass[k] * (r - levels[j]) * (levels[j + 1] - r);
  }
  return v;
}

namespace {

// Calls visit(r, mass) for each bin whose centre r lies in (a, b).
template <typename Visit>
void for_bins_between(double a, double b, const Density& f, Visit&& visit) {
  const auto first = static_cast<std::size_t>(std::clamp((a + 1.0) / f.bin_width(), 0.0, static_cast<double>(f.mass.size())));
  for (std::size_t k = first; k < f.mass.size() && f.centre(k) < b; ++k) {
    if (f.centre(k) > a) visit(f.centre(k), f.mass[k]);
  }
}

}  // namespace

double local_objective(double a, double l, double b, const Density& f) {
  double v = 0.0;
  for_bins_between(a, b, f, [&](double r, double mass) { v += mass * (r <= l ? (r - a) * (l - r) : (r - l) * (b - r)); });
  return v;
}

namespace {

// dV_loc/dl = ∫_a^l (r - a) f dr - ∫_l^b (b - r) f dr.
double local_gradient(double a, double l, double b, const Density& f) {
  double g = 0.0;
  for_bins_between(a, b, f, [&](double r, double mass) { g += mass * (r <= l ? r - a : -(b - r)); });
  return g;
}

double closed_form_level(double a, double b, const Density& f, const std::vector<double>& cumulative) {
  double moment = 0.0;  // ∫_a^b (r - a) f dr
  for_bins_between(a, b, f, [&](double r, double mass) { moment += (r - a) * mass; });
  return inverse_cdf(cumulative, f, cdf(cumulative, f, b) - moment / (b - a));
}

}  // namespace

void alq_sweep(std::vector<double>& levels, const Density& f, AlqUpdate update) {
  const std::vector<double> cumulative = update == AlqUpdate::closed_form ? cumulative_of(f) : std::vector<double>{};
  for (std::size_t i = 1; i + 1 < levels.size(); ++i) {
    const double a = levels[i - 1], b = levels[i + 1];
    const double margin = 1e-6 * (b - a);
    auto inside = [&](double l) { return std::clamp(l, a + margin, b - margin); };
    double candidate = levels[i];
    if (update == AlqUpdate::closed_form) {
      candidate = inside(closed_form_level(a, b, f, cumulative));
    } else if (update == AlqUpdate::gradient) {
      const double h = (b - a) / 1000.0;
      for (int step = 0; step < 10; ++step) {
        const double g = (local_objective(a, candidate + h, b, f) - local_objective(a, candidate - h, b, f)) / (2 * h);
        candidate = inside(candidate - g);
      }
    } else {
      const double g = local_gradient(a, candidate, b, f);
      const double delta = std::min(candidate - a, b - candidate);
      candidate = inside(candidate - (g > 0 ? 1.0 : -1.0) * std::min(std::fabs(0.1 * g), delta / 2));
    }
    // The histogram makes every update approximate: keep a move only if it does not raise V.
    std::vector<double> moved = levels;
    moved[i] = candidate;
    if (variance_objective(moved, f) <= variance_objective(levels, f)) levels[i] = candidate;
  }
}

std::vector<double> exponential_levels(std::size_t count, double p) {
  std::vector<double> levels;
  const std::size_t half = count / 2;
  for (std::size_t j = 0; j < half; ++j) levels.push_back(-std::pow(p, static_cast<double>(j)));
  for (std::size_t j = 0; j < half; ++j) levels.push_back(std::pow(p, static_cast<double>(half - 1 - j)));
  return levels;
}

std::vector<double> alq_levels(std::size_t count, const Density& f, int sweeps, AlqUpdate update) {
  QL_CHECK(count >= 3, "ALQ needs at least 3 levels");
  const std::vector<double> cumulative = cumulative_of(f);
  std::vector<std::vector<double>> starts;
  std::vector<double> quantiles, uniform;
  for (std::size_t i = 0; i < count; ++i) {
    const double q = static_cast<double>(i) / static_cast<double>(count - 1);
    uniform.push_back(-1.0 + 2.0 * q);
    quantiles.push_back(i == 0 ? -1.0 : i + 1 == count ? 1.0 : inverse_cdf(cumulative, f, q));
  }
  // Quantiles of a concentrated density can coincide: spread ties so the levels increase.
  for (std::size_t i = 1; i < count; ++i) quantiles[i] = std::max(quantiles[i], quantiles[i - 1] + 1e-6);
  quantiles.back() = 1.0;
  starts.push_back(quantiles);
  starts.push_back(uniform);
  if (count % 2 == 0) starts.push_back(exponential_levels(count, 0.5));
  std::vector<double> best;
  double best_v = INFINITY;
  for (std::vector<double> levels : starts) {
    for (int s = 0; s < sweeps; ++s) alq_sweep(levels, f, update);
    const double v = variance_objective(levels, f);
    if (v < best_v) {
      best_v = v;
      best = levels;
    }
  }
  return best;
}

std::vector<double> amq_levels(std::size_t count, const Density& f, double* multiplier) {
  QL_CHECK(count >= 4 && count % 2 == 0, "AMQ needs an even number of levels, at least 4");
  auto objective = [&](double p) { return variance_objective(exponential_levels(count, p), f); };
  double best_p = 0.5, best_v = objective(0.5);
  for (int i = 1; i < 100; ++i) {
    const double p = static_cast<double>(i) / 100.0;
    const double v = objective(p);
    if (v < best_v) {
      best_v = v;
      best_p = p;
    }
  }
  // Golden-section refinement in the neighbouring grid cells.
  double lo = std::max(0.005, best_p - 0.01), hi = std::min(0.995, best_p + 0.01);
  const double ratio = (std::sqrt(5.0) - 1) / 2;
  for (int i = 0; i < 40; ++i) {
    const double x1 = hi - ratio * (hi - lo), x2 = lo + ratio * (hi - lo);
    if (objective(x1) < objective(x2)) hi = x2;
    else lo = x1;
  }
  const double refined = (lo + hi) / 2;
  if (objective(refined) < best_v) best_p = refined;
  if (multiplier) *multiplier = best_p;
  return exponential_levels(count, best_p);
}

}  // namespace ql::nuqsgd
