// The uniform bit-depth method (docs/algorithms/uniform.md): after training, quantise the
// weights (or every parameter, as Quantifind does) to b bits with a uniform grid, optionally
// the inputs too; the variants sweep evaluates every bit depth in a range.
#include "uniform_quantizer.hpp"

#include "quantlab/sdk/algorithm.hpp"
#include "quantlab/sdk/config.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/plugin.hpp"

#include <torch/types.h>

#include <cmath>
#include <set>

namespace {

using ql::uniform::UniformOptions;

constexpr char kOptions[] = R"toml(
scheme = "quantifind"      # quantifind: symmetric range, signed ints in [-2^(b-1), 2^(b-1)-1], round half to even (bit-exact with Quantifind) | symmetric: balanced ints in [-(2^(b-1)-1), 2^(b-1)-1] | asymmetric: min-max range with a zero point
granularity = "per_tensor" # per_tensor | per_channel: one scale per output channel (dim 0) of each weight
parameters = "weights"     # weights: the weights of the quantisable layers named by `layers` | all: those and every other parameter (biases, batch-norm and layer-norm affine, embeddings), as Quantifind
layers = ["*"]             # shell-style patterns of the quantisable layers whose weights are quantised ("*conv*", "layer*.attention.*"); [] with parameters = "all": only the other parameters
bits = 8                   # bit depth of the network kept after training, in [2, 32]
quantize_inputs = false    # also quantise each input sample (one scale per sample) with the same scheme and bits
sweep = true               # evaluate every bit depth from min_bits to max_bits on the test split
min_bits = 2
max_bits = 16
)toml";

// A layer's weight on the b-bit grid; the host writes it into the result after post-training.
class WeightQuantizer : public ql::Quantizer {
 public:
  WeightQuantizer(UniformOptions options, std::string scheme) : options_(options), scheme_(std::move(scheme)) {}
  at::Tensor forward(const at::Tensor& w) override { return ql::uniform::quantize_uniform(w.detach(), options_); }
  // The codes with their scales; none when a slice has zero range (forward keeps it as it is).
  std::optional<ql::IntegerForm> integer_form(const at::Tensor& w) override {
    const ql::uniform::UniformCodes c = ql::uniform::encode_uniform(w, options_);
    if (!(c.scale > 0).all().item<bool>()) return std::nullopt;
    const bool per_channel = options_.per_channel && w.dim() >= 2;
    return ql::IntegerForm{c.codes, c.scale.to(torch::kFloat32).flatten(), c.zero_point.flatten(), per_channel ? 0 : -1};
  }
  std::string describe() const override {
    return fmt::format("uniform {} {} bits {}", scheme_, options_.bits, options_.per_channel ? "per channel" : "per tensor");
  }

 private:
  UniformOptions options_;
  std::string scheme_;
};

// Quantises each input sample of a batch on its own max-abs grid, computed as onnxruntime
// computes the exported QuantizeLinear (so the export's codes are the same); straight-through
// in backward. Asymmetric grids and grids over 16 bits have no such form and keep the float64
// arithmetic of the weights.
class InputQuantizer : public ql::Quantizer {
 public:
  explicit InputQuantizer(UniformOptions options) : options_(options) { options_.per_channel = true; }
  at::Tensor forward(const at::Tensor& x) override {
    const std::optional<ql::AffineGrid> grid = affine_grid();
    const at::Tensor quantized = grid ? ql::quantize_affine(x, *grid) : ql::uniform::quantize_uniform(x, options_);
    return x + (quantized - x).detach();
  }
  std::optional<ql::AffineGrid> affine_grid() const override {
    if (options_.scheme == ql::uniform::UniformScheme::asymmetric || options_.bits > 16) return std::nullopt;
    const double half = std::ldexp(1.0, options_.bits - 1);  // 2^(b-1)
    ql::AffineGrid grid;
    grid.range = ql::AffineGrid::Range::max_abs;
    grid.per_sample = true;
    grid.high = static_cast<std::int64_t>(half) - 1;
    if (options_.scheme == ql::uniform::UniformScheme::quantifind) {
      grid.scale = static_cast<float>(2.0 / (2.0 * half - 1.0));  // s = 2M / (2^b - 1)
      grid.low = -static_cast<std::int64_t>(half);
    } else {
      grid.scale = static_cast<float>(1.0 / (half - 1.0));  // s = M / (2^(b-1) - 1)
      grid.low = -grid.high;
    }
    return grid;
  }
  std::string describe() const override { return fmt::format("uniform {}-bit per-sample input", options_.bits); }

 private:
  UniformOptions options_;
};

class Uniform : public ql::Algorithm {
 public:
  explicit Uniform(const ql::Config& options) {
    options_.scheme = ql::uniform::parse_scheme(
        options.get_choice("scheme", {"quantifind", "symmetric", "asymmetric"}));
    options_.per_channel = options.get_choice("granularity", {"per_tensor", "per_channel"}) == "per_channel";
    all_parameters_ = options.get_choice("parameters", {"weights", "all"}) == "all";
    layers_ = options.get_string_list("layers");
    options_.bits = static_cast<int>(options.get_int("bits", 2, 32));
    quantize_inputs_ = options.get_bool("quantize_inputs");
    sweep_ = options.get_bool("sweep");
    min_bits_ = options.get_int("min_bits", 2, 32);
    max_bits_ = options.get_int("max_bits", 2, 32);
    if (max_bits_ < min_bits_) {
      throw ql::ConfigError(options.error_message(
          "max_bits", fmt::format("must not be below min_bits = {}, got {}", min_bits_, max_bits_)));
    }
  }

  std::vector<ql::Variant> variants() const override {
    std::vector<ql::Variant> variants;
    if (!sweep_) return variants;
    for (std::int64_t bits = min_bits_; bits <= max_bits_; ++bits) {
      variants.push_back({fmt::format("{} bits", bits), {{"bits", static_cast<double>(bits)}}});
    }
    return variants;
  }

  void apply_variant(const ql::Variant& variant, ql::Network& network, ql::Calibration& /*calibration*/,
                     ql::Context& /*ctx*/) override {
    UniformOptions options = options_;
    options.bits = static_cast<int>(variant.value("bits"));
    quantize(network, options);
  }

  void post_training(ql::Network& network, ql::Calibration& /*calibration*/, ql::Context& ctx) override {
    const std::int64_t tensors = quantize(network, options_);
    ctx.info("quantised {} tensors to {} bits ({}, {}){}", tensors, options_.bits, scheme_name(),
             options_.per_channel ? "per channel" : "per tensor", quantize_inputs_ ? " and the inputs" : "");
  }

 private:
  std::string scheme_name() const {
    switch (options_.scheme) {
      case ql::uniform::UniformScheme::quantifind: return "quantifind";
      case ql::uniform::UniformScheme::symmetric: return "symmetric";
      case ql::uniform::UniformScheme::asymmetric: return "asymmetric";
    }
    return "?";
  }

  // Puts the weight quantiser into every weighted layer's slot and, with parameters = "all",
  // replaces the other parameters (biases, batch norm, embeddings: no slot) by their
  // quantised values; returns the number of tensors quantised.
  std::int64_t quantize(ql::Network& network, const UniformOptions& options) const {
    torch::NoGradGuard no_grad;
    std::int64_t count = 0;
    std::set<const void*> weights;
    for (auto& [name, layer] : network.quantizable_layers()) {
      if (!layer->has_weight()) continue;
      // Every layer's weight is left to the filter below, selected or not.
      weights.insert(layer->weight.unsafeGetTensorImpl());
      if (!ql::matches_any(name, layers_)) continue;
      layer->set_weight_quantizer(std::make_shared<WeightQuantizer>(options, scheme_name()));
      ++count;
    }
    if (all_parameters_) {
      for (at::Tensor& p : network.parameters()) {
        if (weights.count(p.unsafeGetTensorImpl())) continue;
        p.copy_(ql::uniform::quantize_uniform(p, options));
        ++count;
      }
    }
    network.set_input_quantizer(quantize_inputs_ ? std::make_shared<InputQuantizer>(options) : nullptr);
    if (count == 0) {
      std::vector<std::string> names;
      for (auto& [name, layer] : network.quantizable_layers()) {
        if (layer->has_weight()) names.push_back(name);
      }
      throw ql::Error(fmt::format("uniform: layers = [{}] names none of the network's weighted layers ({}) and "
                                  "parameters = \"weights\": nothing to quantise",
                                  fmt::join(layers_, ", "), fmt::join(names, ", ")));
    }
    return count;
  }

  UniformOptions options_;
  bool all_parameters_ = false;
  std::vector<std::string> layers_;
  bool quantize_inputs_ = false;
  bool sweep_ = true;
  std::int64_t min_bits_ = 2;
  std::int64_t max_bits_ = 16;
};

}  // namespace

QL_PLUGIN(algorithm, "uniform", "0.1.0", "uniform b-bit post-training quantisation and bit-depth sweep",
          kOptions, Uniform)
