// The greedy algorithm: GPFQ post-training quantisation of dense and convolutional layers
// (docs/algorithms/greedy.md) and its baseline MSQ (round every weight to the nearest atom), with
// the bits x alphabet-scalar grid as variants and the quantised network exported to
// quantized.h5 as integer codes and per-layer scales.
#include "gpfq.hpp"
#include "quantized_export.hpp"

#include "quantlab/sdk/algorithm.hpp"
#include "quantlab/sdk/config.hpp"
#include "quantlab/sdk/context.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/nn.hpp"
#include "quantlab/sdk/plugin.hpp"

#include <torch/types.h>

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <optional>

namespace {

namespace fs = std::filesystem;
using ql::greedy::Grams;

constexpr char kOptions[] = R"toml(
method = "gpfq"              # the network kept as the result: gpfq | msq (round each weight to the nearest atom)
bits = 1.584962500721156     # alphabet size round(2^bits): log2(3) = ternary {-a, 0, a}; 2: {-a, -a/3, a/3, a} (no zero); 3, 4, ...
alphabet_scalar = 3.0        # C: the alphabet spans [-a, a] with a = C * (the radius rule's statistic of each layer)
alphabet_radius = "layer_median"  # the statistic: layer_median (Lybrand & Saab: median |w| of the layer) | mean_neuron_max (Zhang, Zhou & Saab, ImageNet: the mean over output neurons of max |w|)
alphabet_zero = false        # add 0 to alphabets of an even size (2^b levels plus zero, Zhang, Zhou & Saab); odd sizes hold it already
calibration_samples = 25000  # training samples (seeded draw) whose activations drive GPFQ; streamed, memory does not grow with it
layers = ["*"]               # quantise layers whose name matches one of these patterns (shell-style: "fc*", "features.*")
skip_layers = []             # ... except those matching one of these
kinds = ["linear", "conv2d"] # layer kinds to quantise; ["linear"]: dense layers only, as the ImageNet VGG16 experiment
conv_mode = "channelwise"    # channelwise: the reference scheme, each (input channel, filter) pair is a neuron over kh*kw patches | full: each filter over its whole receptive field (C_in/groups * kh * kw)
max_patches_per_image = 0    # conv layers: use this many patch positions per image (seeded draw), 0: all
data_error = true            # compute ||Xw - X~q|| / ||Xw|| per layer (MSQ then also streams the data)
sweep = true                 # evaluate every (method, bits, alphabet_scalar) of the grid below on the test split
sweep_methods = ["gpfq", "msq"]
sweep_bits = [1.584962500721156]
sweep_alphabet_scalars = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
export = true                # write the result's codes and scales to <fold>/greedy/quantized.h5
dump_data = false            # also write each layer's X, X~, weights and codes of the result to <fold>/greedy/layer_data.h5, to check other implementations against (memory grows with the samples)
)toml";

enum class Method { gpfq, msq };

std::string_view to_string(Method method) { return method == Method::gpfq ? "gpfq" : "msq"; }

struct Setting {
  Method method;
  double bits;
  double scalar;
  std::string label() const { return fmt::format("{} {:.3g} bits C={:g}", to_string(method), bits, scalar); }
};

// Makes a layer compute with fixed weights (the quantised ones) without touching its own;
// with the atom indices and the alphabet, also their integer form (for export).
class FixedWeights : public ql::Quantizer {
 public:
  FixedWeights(at::Tensor weights, std::string description, at::Tensor indices = {}, at::Tensor atoms = {})
      : weights_(std::move(weights)), description_(std::move(description)), indices_(std::move(indices)),
        atoms_(std::move(atoms)) {}
  at::Tensor forward(const at::Tensor&) override { return weights_; }
  std::string describe() const override { return description_; }
  std::optional<ql::IntegerForm> integer_form(const at::Tensor&) override {
    if (!indices_.defined()) return std::nullopt;
    return ql::greedy::alphabet_integers(indices_.cpu(), atoms_);
  }

 private:
  at::Tensor weights_;
  std::string description_;
  at::Tensor indices_, atoms_;
};

struct LayerResult {
  std::string name;
  at::Tensor codes;   // atom indices, the weight's shape
  at::Tensor atoms;
  at::Tensor values;  // the quantised weight (the layer's dtype and device)
  double relative_error = -1.0;
};

class Greedy : public ql::Algorithm {
 public:
  explicit Greedy(const ql::Config& options) {
    result_.method = options.get_enum<Method>("method", {{"gpfq", Method::gpfq}, {"msq", Method::msq}});
    result_.bits = options.get_double("bits", 0.5, 16.0);
    result_.scalar = options.get_double("alphabet_scalar", 1e-6, 1e6);
    radius_rule_ = options.get_enum<ql::greedy::RadiusRule>(
        "alphabet_radius", {{"layer_median", ql::greedy::RadiusRule::layer_median}, {"mean_neuron_max", ql::greedy::RadiusRule::mean_neuron_max}});
    alphabet_zero_ = options.get_bool("alphabet_zero");
    samples_ = options.get_int("calibration_samples", 1, INT64_MAX);
    patterns_ = options.get_string_list("layers");
    skip_ = options.get_string_list("skip_layers");
    for (const std::string& kind : options.get_string_list("kinds")) {
      if (kind != "linear" && kind != "conv2d") {
        throw ql::ConfigError(options.error_message("kinds", fmt::format("expected \"linear\" or \"conv2d\", got \"{}\"", kind)));
      }
      kinds_.push_back(kind == "linear" ? ql::nn::LayerKind::linear : ql::nn::LayerKind::conv2d);
    }
    full_receptive_field_ = options.get_choice("conv_mode", {"channelwise", "full"}) == "full";
    max_patches_ = options.get_int("max_patches_per_image", 0, INT64_MAX);
    data_error_ = options.get_bool("data_error");
    export_ = options.get_bool("export");
    dump_data_ = options.get_bool("dump_data");
    if (options.get_bool("sweep")) {
      for (const std::string& name : options.get_string_list("sweep_methods")) {
        if (name != "gpfq" && name != "msq") {
          throw ql::ConfigError(options.error_message("sweep_methods", fmt::format("expected \"gpfq\" or \"msq\", got \"{}\"", name)));
        }
        const Method method = name == "gpfq" ? Method::gpfq : Method::msq;
        for (double bits : options.get_double_list("sweep_bits")) {
          if (bits < 0.5 || bits > 16) throw ql::ConfigError(options.error_message("sweep_bits", "expected values in [0.5, 16]"));
          for (double scalar : options.get_double_list("sweep_alphabet_scalars")) {
            if (scalar <= 0) throw ql::ConfigError(options.error_message("sweep_alphabet_scalars", "expected positive values"));
            grid_.push_back({method, bits, scalar});
          }
        }
      }
    }
  }

  std::vector<ql::Variant> variants() const override {
    std::vector<ql::Variant> variants;
    for (const Setting& s : grid_) {
      variants.push_back({s.label(), {{"bits", s.bits}, {"alphabet_scalar", s.scalar}}, std::string(to_string(s.method))});
    }
    return variants;
  }

  void apply_variant(const ql::Variant& variant, ql::Network& network, ql::Calibration& calibration,
                     ql::Context& ctx) override {
    const Setting setting{variant.series == "gpfq" ? Method::gpfq : Method::msq, variant.value("bits"),
                          variant.value("alphabet_scalar")};
    const auto layers = quantize(network, calibration, ctx, setting);
    record_errors(setting.label(), layers, ctx);
  }

  void post_training(ql::Network& network, ql::Calibration& calibration, ql::Context& ctx) override {
    const auto started = std::chrono::steady_clock::now();
    const auto layers = quantize(network, calibration, ctx, result_, dump_data_);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    record_errors(result_.label() + " (result)", layers, ctx);
    double error = 0;
    for (const LayerResult& layer : layers) error = std::max(error, layer.relative_error);
    ctx.log(ql::LogLevel::info,
            fmt::format("quantised {} layers with {} in {:.2f} s (largest relative error on the data {:.4g})",
                        layers.size(), result_.label(), seconds, error));
    if (dump_data_) {
      ctx.write_file("layer_data.h5", [&](const fs::path& file) { ql::greedy::export_layer_data(file, dumped_); });
      dumped_.clear();
      ctx.log(ql::LogLevel::info, fmt::format("layer data in {}", (ctx.artifacts_dir() / "layer_data.h5").string()));
    }
    if (export_) {
      std::vector<ql::greedy::ExportedLayer> exported;
      for (const LayerResult& layer : layers) {
        exported.push_back({layer.name, layer.codes, layer.atoms, result_.bits, result_.scalar});
      }
      ctx.write_file("quantized.h5", [&](const fs::path& file) {
        ql::greedy::export_quantized(file, std::string(to_string(result_.method)), exported);
      });
      ctx.log(ql::LogLevel::info, fmt::format("codes and scales in {}", (ctx.artifacts_dir() / "quantized.h5").string()));
    }
  }

 private:
  // The layers to quantise: matched by name, of a chosen kind, with weights.
  ql::Network::NamedLayers chosen_layers(ql::Network& network) const {
    ql::Network::NamedLayers chosen;
    for (auto& [name, layer] : network.select_layers(patterns_, skip_)) {
      if (layer->has_weight() && std::find(kinds_.begin(), kinds_.end(), layer->kind()) != kinds_.end()) {
        chosen.emplace_back(name, layer);
      }
    }
    return chosen;
  }

  ql::greedy::ConvScheme scheme() const {
    return full_receptive_field_ ? ql::greedy::ConvScheme::full : ql::greedy::ConvScheme::channelwise;
  }

  // The rows of a layer's input as GPFQ sees them: [G, R, N].
  at::Tensor rows_of(const ql::nn::QuantizableLayer& layer, const at::Tensor& input, std::uint64_t seed) const {
    if (layer.kind() == ql::nn::LayerKind::linear) return input.reshape({1, -1, input.size(-1)});
    return ql::greedy::conv_rows(input, static_cast<const ql::nn::Conv2d&>(layer).options(), scheme(), max_patches_,
                                 seed);
  }

  // The layer's weight as neurons: [G, N, F].
  at::Tensor neurons_of(const ql::nn::QuantizableLayer& layer) const {
    const at::Tensor w = layer.weight.detach().to(torch::kFloat64);
    if (layer.kind() == ql::nn::LayerKind::linear) return w.t().unsqueeze(0);
    return ql::greedy::conv_neurons(w, static_cast<const ql::nn::Conv2d&>(layer).options(), scheme());
  }

  // The inverse of neurons_of.
  at::Tensor weight_of(const ql::nn::QuantizableLayer& layer, const at::Tensor& q) const {
    if (layer.kind() == ql::nn::LayerKind::linear) return q.squeeze(0).t().contiguous();
    return ql::greedy::conv_weight(q, static_cast<const ql::nn::Conv2d&>(layer).options(), scheme());
  }

  std::vector<LayerResult> quantize(ql::Network& network, ql::Calibration& calibration, ql::Context& ctx,
                                    const Setting& setting, bool dump = false) {
    torch::NoGradGuard no_grad;
    const bool was_training = network.is_training();
    network.eval();
    const ql::Network::NamedLayers chosen = chosen_layers(network);
    QL_CHECK(!chosen.empty(), "greedy: no layer matches layers/skip_layers/kinds");
    std::vector<std::shared_ptr<ql::Quantizer>> original;
    for (const auto& [name, layer] : chosen) original.push_back(layer->weight_quantizer());
    const bool needs_data = setting.method == Method::gpfq || data_error_;

    std::vector<LayerResult> results;
    for (std::size_t l = 0; l < chosen.size(); ++l) {
      // Named references, not structured bindings: lambdas below capture them (C++17).
      const std::string& name = chosen[l].first;
      const auto& layer = chosen[l].second;
      const at::Tensor w = neurons_of(*layer);
      const double statistic = ql::greedy::radius_statistic(radius_rule_, layer->weight);
      const at::Tensor atoms = ql::greedy::alphabet(setting.bits, setting.scalar * statistic, alphabet_zero_);
      at::Tensor q;
      std::optional<Grams> grams;
      std::vector<at::Tensor> dumped_x, dumped_x_tilde;
      if (needs_data) {
        grams.emplace(w.size(0), w.size(1), w.device());
        auto forward = [&](const ql::Batch& batch) { return network.layer_input(*layer, batch.inputs.to(ctx.device())); };
        std::int64_t batch_number = 0;
        std::vector<std::shared_ptr<ql::Quantizer>> fixed;
        for (std::size_t j = 0; j < l; ++j) fixed.push_back(std::make_shared<FixedWeights>(results[j].values, ""));
        calibration.for_each_batch(samples_, [&](const ql::Batch& batch) {
          // X: the analog network (original slots); X̃: earlier chosen layers quantised.
          for (std::size_t j = 0; j < l; ++j) chosen[j].second->set_weight_quantizer(original[j]);
          const at::Tensor x = forward(batch);
          for (std::size_t j = 0; j < l; ++j) chosen[j].second->set_weight_quantizer(fixed[j]);
          const at::Tensor x_tilde = l == 0 ? x : forward(batch);
          const std::uint64_t seed = ctx.seed() + 7919 * static_cast<std::uint64_t>(batch_number++);
          // Patches can be large: accumulate in slices of images.
          const std::int64_t images = x.size(0);
          const std::int64_t step = layer->kind() == ql::nn::LayerKind::linear ? images : std::max<std::int64_t>(1, 64);
          if (dump) {
            dumped_x.push_back(rows_of(*layer, x, seed).to(torch::kFloat64));
            dumped_x_tilde.push_back(rows_of(*layer, x_tilde, seed).to(torch::kFloat64));
          }
          for (std::int64_t begin = 0; begin < images; begin += step) {
            const std::int64_t end = std::min(images, begin + step);
            const at::Tensor rows = rows_of(*layer, x.slice(0, begin, end), seed + static_cast<std::uint64_t>(begin));
            grams->add(rows, l == 0 ? rows
                                    : rows_of(*layer, x_tilde.slice(0, begin, end), seed + static_cast<std::uint64_t>(begin)));
          }
        });
        for (std::size_t j = 0; j < l; ++j) chosen[j].second->set_weight_quantizer(original[j]);
        QL_CHECK(grams->rows > 0, "greedy: the calibration data is empty");
      }
      q = setting.method == Method::gpfq ? ql::greedy::gpfq_from_grams(w, *grams, atoms) : ql::greedy::round_to_alphabet(w, atoms);
      LayerResult result;
      result.name = name;
      result.atoms = atoms;
      result.codes = weight_of(*layer, ql::greedy::nearest_atom_index(q, atoms));
      result.values = atoms.to(result.codes.device())
                          .index_select(0, result.codes.flatten())
                          .view(result.codes.sizes())
                          .to(layer->weight.dtype())
                          .to(layer->weight.device());
      if (grams) result.relative_error = ql::greedy::residual(w, q, *grams).relative();
      if (dump && !dumped_x.empty()) {
        dumped_.push_back({name, torch::cat(dumped_x, 1), torch::cat(dumped_x_tilde, 1), w, atoms,
                           ql::greedy::nearest_atom_index(q, atoms)});
      }
      results.push_back(std::move(result));
      ctx.progress(fmt::format("{} layer {}", setting.label(), name), static_cast<std::int64_t>(l + 1),
                   static_cast<std::int64_t>(chosen.size()));
    }
    // The network computes with the quantised weights; after post-training the host writes
    // them into the result with this description.
    for (std::size_t j = 0; j < chosen.size(); ++j) {
      const std::string description =
          fmt::format("greedy {}, {} atoms up to {:.6g}", setting.label(), results[j].atoms.size(0),
                      results[j].atoms.max().item<double>());
      chosen[j].second->set_weight_quantizer(
          std::make_shared<FixedWeights>(results[j].values, description, results[j].codes, results[j].atoms));
    }
    network.train(was_training);
    return results;
  }

  void record_errors(const std::string& label, const std::vector<LayerResult>& layers, ql::Context& ctx) {
    if (!data_error_ && result_.method != Method::gpfq) return;
    for (const LayerResult& layer : layers) {
      if (layer.relative_error >= 0) error_table_.rows.push_back({label, layer.name, fmt::format("{:.6g}", layer.relative_error)});
    }
    ctx.write_table("data_error", error_table_);
  }

  Setting result_;
  ql::greedy::RadiusRule radius_rule_ = ql::greedy::RadiusRule::layer_median;
  bool alphabet_zero_ = false;
  std::int64_t samples_ = 0;
  std::vector<std::string> patterns_, skip_;
  std::vector<ql::nn::LayerKind> kinds_;
  bool full_receptive_field_ = false;
  std::int64_t max_patches_ = 0;
  bool data_error_ = true;
  bool export_ = true;
  bool dump_data_ = false;
  std::vector<ql::greedy::LayerData> dumped_;
  std::vector<Setting> grid_;
  // ||Xw − X̃q|| / ||Xw|| of every layer of every setting quantised so far.
  ql::Table error_table_{{"variant", "layer", "relative_error"}, {}};
};

}  // namespace

QL_PLUGIN(algorithm, "greedy", "0.1.0",
          "GPFQ greedy path-following post-training quantisation (Lybrand & Saab) and the MSQ baseline",
          kOptions, Greedy)
