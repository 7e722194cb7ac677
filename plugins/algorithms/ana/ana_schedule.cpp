#include "ana_schedule.hpp"

#include "quantlab/sdk/error.hpp"

#include <algorithm>
#include <cmath>

namespace ql::ana {

Decay parse_decay(const std::string& name) {
  if (name == "constant") return Decay::constant;
  if (name == "linear") return Decay::linear;
  if (name == "quadratic") return Decay::quadratic;
  throw Error(fmt::format("unknown decay '{}' (constant, linear, quadratic)", name));
}

double thermostat_decay(Decay decay, double t, double start, double length) {
  if (decay == Decay::constant) return 1.0;
  const double r = length > 0 ? std::clamp(t - start, 0.0, length) / length : (t >= start ? 1.0 : 0.0);
  return decay == Decay::linear ? 1.0 - r : (1.0 - r) * (1.0 - r);
}

Law parse_law(const std::string& name) {
  if (name == "bws" || name == "lws") return Law::bws;  // lws: the legacy name of bws
  if (name == "uws") return Law::uws;
  throw Error(fmt::format("unknown law '{}' (bws, uws)", name));
}

double controller_value(const LawParameters& p, double t) {
  if (p.law == Law::bws) {
    if (p.end <= p.start) return t < p.start ? p.beta : 0.0;
    return p.beta * std::pow((p.end - std::clamp(t, p.start, p.end)) / (p.end - p.start), p.alpha);
  }
  const double m = std::pow(1.0 / (std::max(t, p.start) - p.start + 1.0), p.alpha);
  return m < p.eps ? 0.0 : p.beta * m;
}

}  // namespace ql::ana
