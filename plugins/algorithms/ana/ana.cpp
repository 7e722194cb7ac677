// The ana algorithm: Additive Noise Annealing (Spallanzani et al.; docs/algorithms/ana.md).
// Weights of quantisable Linear/Conv2d layers and outputs of quantisable activations go through
// noisy staircases whose noise is annealed to zero by a schedule, so training ends with a true
// quantised network; validation and test always see the hard staircase.
#include "ana_quantizer.hpp"
#include "ana_schedule.hpp"

#include "quantlab/sdk/algorithm.hpp"
#include "quantlab/sdk/config.hpp"
#include "quantlab/sdk/context.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/nn.hpp"
#include "quantlab/sdk/plugin.hpp"

#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/types.h>

#include <fmt/format.h>

#include <cmath>
#include <optional>
#include <sstream>

namespace {

using namespace ql::ana;

constexpr char kOptions[] = R"toml(
# The staircase: quantlib's spec (levels 0..2^nbits-1, minus 2^(nbits-1) if signed, lowest dropped if balanced, thresholds halfway, times eps) ...
nbits = 2
signed = true
balanced = true              # with nbits 2 and signed: the ternary {-eps, 0, eps}
eps = 1.0
# ... or the 2019 explicit lists (both non-empty: they replace the spec)
thresholds = []              # e.g. [-0.5, 0.5]
quant_levels = []            # e.g. [-1.0, 0.0, 1.0]
noise = "uniform"            # uniform (σ: half-width) | triangular (half-width) | normal (std) | logistic (scale)
strategy = "expectation"     # expectation | mode (most likely level) | random (a sampled level) while training
weights = ["*"]              # quantise the weights of Linear/Conv2d layers matching these name patterns (shell-style: "fc*", "features.*")
activations = ["*"]          # quantise the outputs of Activation layers matching these (they replace the activation: use activation = "identity" in the topology for the reference setups)
init_near_thresholds = true  # each weight starts at a random threshold + U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as the reference (training from scratch)

# The schedule. Layer groups: each a space-separated list of name patterns; every quantised layer
# belongs to the first group that matches it. The lists below hold one value per group (a single
# value applies to every group).
groups = ["*"]
schedule = "thermostat"      # thermostat (2019: separate forward and backward σ, t = epoch + 1) | controller (quantlib: one σ for both and a mean μ, t = epoch)
# thermostat: σ_fwd = forward_sigma * d(t), σ_bwd = backward_sigma * d(t); d: constant | linear | quadratic over [start, start + length]
forward_sigma = [0.5]
forward_decay = ["linear"]
forward_start = [0.0]
forward_length = [10.0]
backward_sigma = [0.5]
backward_decay = ["constant"]
backward_start = [0.0]
backward_length = [1.0]
# controller: σ = sigma_beta * law(t), μ = mu_beta * law(t); law bws (bounded window [start, end], power alpha) | uws (unbounded, power alpha, 0 below eps)
sigma_beta = [0.5]
sigma_law = ["bws"]
sigma_start = [0.0]
sigma_end = [10.0]
sigma_alpha = [1.0]
sigma_eps = [0.001]
mu_beta = [0.0]
mu_law = ["bws"]
mu_start = [0.0]
mu_end = [10.0]
mu_alpha = [1.0]
mu_eps = [0.001]
)toml";

// A per-group list: one value for every group, or a single value for all.
template <typename T>
std::vector<T> per_group(const ql::Config& options, const char* key, std::vector<T> values, std::size_t groups) {
  if (values.size() == 1) values.assign(groups, values.front());
  if (values.size() != groups) {
    throw ql::ConfigError(options.error_message(
        key, fmt::format("expected 1 or {} values (one per group), got {}", groups, values.size())));
  }
  return values;
}

// A weight or activation quantiser of one group: the group's parameters change with the schedule.
class AnaQuantizer : public ql::Quantizer {
 public:
  AnaQuantizer(const Staircase& staircase, std::shared_ptr<AnaParameters> parameters)
      : staircase_(staircase), parameters_(std::move(parameters)) {}
  at::Tensor forward(const at::Tensor& x) override {
    // Noise only while training: evaluation runs without autograd and sees the hard staircase.
    return ana_quantize(x, staircase_, *parameters_, torch::GradMode::is_enabled());
  }
  std::string describe() const override { return fmt::format("ana {} levels", staircase_.levels.size()); }
  // The hard staircase's levels as integers times their common step, when they have one (the
  // levels of a spec do; explicit lists may not).
  std::optional<ql::IntegerForm> integer_form(const at::Tensor& x) override {
    const std::vector<double>& levels = staircase_.levels;
    double step = INFINITY;
    for (std::size_t i = 1; i < levels.size(); ++i) step = std::min(step, levels[i] - levels[i - 1]);
    if (!(step > 0) || !std::isfinite(step)) return std::nullopt;
    for (double level : levels) {
      if (std::fabs(level / step - std::round(level / step)) > 1e-6) return std::nullopt;
    }
    torch::NoGradGuard no_grad;  // forward() is then the hard staircase, as evaluation sees it
    const at::Tensor values = forward(x.detach()).to(torch::kFloat64);
    return ql::IntegerForm{torch::round(values / step).to(torch::kInt64), torch::tensor({static_cast<float>(step)}),
                           torch::zeros({1}, torch::kInt64), -1};
  }
  // The hard staircase as round((x - μ) / step), when its levels are consecutive multiples of
  // one step with thresholds at the midpoints (every spec's are). The staircase switches on at
  // a threshold (ties up) where the grid rounds ties to even; docs/export.md measures it.
  std::optional<ql::AffineGrid> affine_grid() const override {
    const std::vector<double>& levels = staircase_.levels;
    const double step = levels[1] - levels[0];
    const double first = std::round(levels[0] / step);
    const auto near = [&](double value, double expected) { return std::fabs(value - expected) <= 1e-6 * step; };
    if (!(step > 0) || !near(levels[0], first * step)) return std::nullopt;
    for (std::size_t i = 0; i < levels.size(); ++i) {
      if (!near(levels[i], (first + static_cast<double>(i)) * step)) return std::nullopt;
      if (i > 0 && !near(staircase_.thresholds[i - 1], (first + static_cast<double>(i) - 0.5) * step)) return std::nullopt;
    }
    ql::AffineGrid grid;
    grid.scale = static_cast<float>(step);
    grid.low = static_cast<std::int64_t>(first);
    grid.high = grid.low + static_cast<std::int64_t>(levels.size()) - 1;
    grid.offset = static_cast<float>(parameters_->mu);
    return grid;
  }

 private:
  Staircase staircase_;
  std::shared_ptr<AnaParameters> parameters_;
};

struct Group {
  std::vector<std::string> patterns;
  Decay forward_decay, backward_decay;
  double forward_sigma, forward_start, forward_length;
  double backward_sigma, backward_start, backward_length;
  LawParameters sigma, mu;
  std::shared_ptr<AnaParameters> parameters = std::make_shared<AnaParameters>();
  std::vector<std::shared_ptr<ql::nn::QuantizableLayer>> weight_layers, activation_layers;
};

class Ana : public ql::Algorithm {
 public:
  explicit Ana(const ql::Config& options) {
    try {
      const auto thresholds = options.get_double_list("thresholds");
      const auto levels = options.get_double_list("quant_levels");
      if (!thresholds.empty() || !levels.empty()) {
        staircase_ = staircase_from_lists(thresholds, levels);
      } else {
        staircase_ = staircase_from_spec(options.get_int("nbits", 1, 16), options.get_bool("signed"),
                                         options.get_bool("balanced"), options.get_double("eps", 1e-12, 1e12));
      }
    } catch (const ql::ConfigError&) {
      throw;
    } catch (const ql::Error& e) {
      throw ql::ConfigError(options.error_message("quant_levels", e.what()));
    }
    noise_ = parse_noise(options.get_choice("noise", {"uniform", "triangular", "normal", "logistic"}));
    strategy_ = parse_strategy(options.get_choice("strategy", {"expectation", "mode", "random"}));
    weights_ = options.get_string_list("weights");
    activations_ = options.get_string_list("activations");
    init_near_thresholds_ = options.get_bool("init_near_thresholds");
    controller_ = options.get_enum<bool>("schedule", {{"thermostat", false}, {"controller", true}});

    const auto group_patterns = options.get_string_list("groups");
    if (group_patterns.empty()) throw ql::ConfigError(options.error_message("groups", "expected at least one group"));
    const std::size_t n = group_patterns.size();
    auto doubles = [&](const char* key) { return per_group(options, key, options.get_double_list(key), n); };
    auto strings = [&](const char* key) { return per_group(options, key, options.get_string_list(key), n); };
    const auto fs = doubles("forward_sigma"), fst = doubles("forward_start"), fl = doubles("forward_length");
    const auto bs = doubles("backward_sigma"), bst = doubles("backward_start"), bl = doubles("backward_length");
    const auto fd = strings("forward_decay"), bd = strings("backward_decay");
    const auto sb = doubles("sigma_beta"), ss = doubles("sigma_start"), se = doubles("sigma_end"),
               sa = doubles("sigma_alpha"), seps = doubles("sigma_eps");
    const auto mb = doubles("mu_beta"), ms = doubles("mu_start"), me = doubles("mu_end"), ma = doubles("mu_alpha"),
               meps = doubles("mu_eps");
    const auto sl = strings("sigma_law"), ml = strings("mu_law");
    for (std::size_t g = 0; g < n; ++g) {
      Group group;
      std::istringstream words(group_patterns[g]);
      for (std::string word; words >> word;) group.patterns.push_back(word);
      try {
        group.forward_decay = parse_decay(fd[g]);
        group.backward_decay = parse_decay(bd[g]);
        group.sigma = {parse_law(sl[g]), sb[g], ss[g], se[g], sa[g], seps[g]};
        group.mu = {parse_law(ml[g]), mb[g], ms[g], me[g], ma[g], meps[g]};
      } catch (const ql::Error& e) {
        throw ql::ConfigError(options.error_message("groups", e.what()));
      }
      if (fs[g] < 0 || bs[g] < 0 || sb[g] < 0) {
        throw ql::ConfigError(options.error_message("groups", "noise scales must be >= 0"));
      }
      group.forward_sigma = fs[g];
      group.forward_start = fst[g];
      group.forward_length = fl[g];
      group.backward_sigma = bs[g];
      group.backward_start = bst[g];
      group.backward_length = bl[g];
      group.parameters->noise = noise_;
      group.parameters->strategy = strategy_;
      groups_.push_back(std::move(group));
    }
  }

  void attach(ql::Network& network, ql::Context& ctx) override {
    std::vector<std::string> unassigned;
    for (const auto& [name, layer] : network.quantizable_layers()) {
      const bool weight = layer->has_weight() && ql::matches_any(name, weights_);
      const bool activation = layer->kind() == ql::nn::LayerKind::activation && ql::matches_any(name, activations_);
      if (!weight && !activation) continue;
      Group* group = nullptr;
      for (Group& g : groups_) {
        if (ql::matches_any(name, g.patterns)) {
          group = &g;
          break;
        }
      }
      if (!group) {
        unassigned.push_back(name);
        continue;
      }
      auto quantizer = std::make_shared<AnaQuantizer>(staircase_, group->parameters);
      if (weight) {
        layer->set_weight_quantizer(quantizer);
        group->weight_layers.push_back(layer);
        if (init_near_thresholds_) initialise_near_thresholds(*layer);
      } else {
        layer->set_output_quantizer(quantizer);
        group->activation_layers.push_back(layer);
      }
      ++quantised_;
    }
    QL_CHECK(unassigned.empty(), "ana: layers {} are quantised but in no group (groups must cover them)",
             fmt::join(unassigned, ", "));
    QL_CHECK(quantised_ > 0, "ana: no layer matches weights/activations");
    ctx.log(ql::LogLevel::info, fmt::format("{} quantisers ({} levels, {} noise) in {} groups", quantised_,
                                            staircase_.levels.size(), options_noise_name(), groups_.size()));
  }

  void on_epoch_begin(std::int64_t epoch, ql::Context& ctx) override {
    // A run resumed in the middle of an epoch calls this again for that epoch: the schedule is
    // set again (it is a function of the epoch), the statistics are not logged twice.
    const bool log = epoch != logged_epoch_;
    logged_epoch_ = epoch;
    epoch_ = epoch;
    std::int64_t annealed = 0;
    for (std::size_t g = 0; g < groups_.size(); ++g) {
      Group& group = groups_[g];
      AnaParameters& p = *group.parameters;
      if (controller_) {
        const double t = static_cast<double>(epoch);
        const double sigma = controller_value(group.sigma, t);
        const double mu = controller_value(group.mu, t);
        if (!mu_applied_ && mu != 0.0) shift_weights(group, mu);  // quantlib re-centres once, on the first set
        p.mu = mu;
        p.forward_sigma = p.backward_sigma = sigma;
      } else {
        const double t = static_cast<double>(epoch + 1);
        p.forward_sigma = group.forward_sigma * thermostat_decay(group.forward_decay, t, group.forward_start,
                                                                 group.forward_length);
        p.backward_sigma = group.backward_sigma * thermostat_decay(group.backward_decay, t, group.backward_start,
                                                                   group.backward_length);
      }
      if (p.forward_sigma == 0.0) {
        annealed += static_cast<std::int64_t>(group.weight_layers.size() + group.activation_layers.size());
      }
      if (!log) continue;
      ctx.scalar(fmt::format("sigma_forward/group{}", g), p.forward_sigma, last_step_);
      ctx.scalar(fmt::format("sigma_backward/group{}", g), p.backward_sigma, last_step_);
      if (controller_) ctx.scalar(fmt::format("mu/group{}", g), p.mu, last_step_);
    }
    mu_applied_ = true;
    if (!log) return;
    ctx.scalar("annealed_layers", static_cast<double>(annealed), last_step_);
    // Where the weights sit: the share of each level among all quantised weights.
    std::vector<double> counts(staircase_.levels.size(), 0.0);
    double total = 0;
    for (const Group& group : groups_) {
      for (const auto& layer : group.weight_layers) {
        const at::Tensor q = hard_staircase(layer->weight.detach(), staircase_);
        for (std::size_t k = 0; k < counts.size(); ++k) counts[k] += (q == staircase_.levels[k]).sum().item<double>();
        total += static_cast<double>(q.numel());
      }
    }
    for (std::size_t k = 0; k < counts.size() && total > 0; ++k) {
      ctx.scalar(fmt::format("weight_level_fraction/{:g}", staircase_.levels[k]), counts[k] / total, last_step_);
    }
    ctx.log(ql::LogLevel::debug, fmt::format("epoch {}: {} of {} quantisers annealed", epoch + 1, annealed, quantised_));
  }

  void on_step_end(std::int64_t step, ql::Context&) override { last_step_ = step; }

  void save_state(torch::serialize::OutputArchive& archive) const override {
    archive.write("epoch", torch::tensor(epoch_));
    archive.write("last_step", torch::tensor(last_step_));
    archive.write("mu_applied", torch::tensor(static_cast<std::int64_t>(mu_applied_)));
    archive.write("logged_epoch", torch::tensor(logged_epoch_));
  }

  void load_state(torch::serialize::InputArchive& archive) override {
    at::Tensor epoch, step, applied, logged;
    archive.read("epoch", epoch);
    archive.read("logged_epoch", logged);
    logged_epoch_ = logged.item<std::int64_t>();
    archive.read("last_step", step);
    archive.read("mu_applied", applied);
    epoch_ = epoch.item<std::int64_t>();
    last_step_ = step.item<std::int64_t>();
    mu_applied_ = applied.item<std::int64_t>() != 0;
  }

 private:
  std::string options_noise_name() const {
    const char* names[] = {"uniform", "triangular", "normal", "logistic"};
    return names[static_cast<int>(noise_)];
  }

  void initialise_near_thresholds(ql::nn::QuantizableLayer& layer) const {
    torch::NoGradGuard no_grad;
    const at::Tensor& w = layer.weight;
    const double fan_in = static_cast<double>(w.numel() / w.size(0));
    const double bound = 1.0 / std::sqrt(fan_in);
    const at::Tensor thresholds = torch::tensor(staircase_.thresholds, w.options());
    const at::Tensor chosen = thresholds.index_select(
        0, torch::randint(0, static_cast<std::int64_t>(staircase_.thresholds.size()), {w.numel()},
                          torch::TensorOptions().dtype(torch::kLong).device(w.device())));
    w.copy_(chosen.view(w.sizes()) + torch::empty_like(w).uniform_(-bound, bound));
    if (layer.bias.defined()) layer.bias.uniform_(-bound, bound);
  }

  void shift_weights(Group& group, double mu) {
    torch::NoGradGuard no_grad;
    for (const auto& layer : group.weight_layers) layer->weight.add_(mu);
  }

  Staircase staircase_;
  Noise noise_ = Noise::uniform;
  Strategy strategy_ = Strategy::expectation;
  std::vector<std::string> weights_, activations_;
  bool init_near_thresholds_ = true;
  bool controller_ = false;
  std::vector<Group> groups_;
  std::int64_t quantised_ = 0;
  std::int64_t epoch_ = 0;
  std::int64_t last_step_ = 0;
  std::int64_t logged_epoch_ = -1;
  bool mu_applied_ = false;
};

}  // namespace

QL_PLUGIN(algorithm, "ana", "0.1.0",
          "additive noise annealing: training-time quantisation of weights and activations (Spallanzani et al.)",
          kOptions, Ana)
