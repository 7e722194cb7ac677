// ANA annealing schedules (docs/algorithms/ana.md, "Schedules"). Both are functions of the epoch only, so the
// schedule state a checkpoint needs is the epoch.
//
// thermostat (2019): t = epoch + 1; σ_fwd = s_fwd · d_fwd(t), σ_bwd = s_bwd · d_bwd(t), with
//   the decay d one of constant (1), linear (1 - r), quadratic ((1 - r)²),
//   r = clamp(t - start, 0, length) / length.
// controller (quantlib): t = epoch; μ = β_μ · f_μ(t), σ_fwd = σ_bwd = β_σ · f_σ(t), with
//   bws(t) = ((end - clamp(t, start, end)) / (end - start))^α and
//   uws(t) = m = (1 / (max(t, start) - start + 1))^α, 0 when m < eps.
#pragma once

#include <cstdint>
#include <string>

namespace ql::ana {

enum class Decay { constant, linear, quadratic };
Decay parse_decay(const std::string& name);
/// d(t) of the thermostat's timers.
double thermostat_decay(Decay decay, double t, double start, double length);

enum class Law { bws, uws };
Law parse_law(const std::string& name);
struct LawParameters {
  Law law = Law::bws;
  double beta = 0.0;
  double start = 0.0;
  double end = 1.0;
  double alpha = 1.0;
  double eps = 0.0;
};
/// β · f(t) of the controller's timers.
double controller_value(const LawParameters& p, double t);

}  // namespace ql::ana
