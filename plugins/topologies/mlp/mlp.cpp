// The multi-layer perceptron: flatten, then per hidden width Linear -> [BatchNorm] ->
// Activation -> [Dropout], then a Linear classifier. Every Linear and Activation is an SDK
// quantisable layer.
#include "quantlab/sdk/config.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/nn.hpp"
#include "quantlab/sdk/plugin.hpp"
#include "quantlab/sdk/topology.hpp"

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/dropout.h>

#include <functional>
#include <numeric>

namespace {

constexpr char kOptions[] = R"toml(
hidden = [256, 128]      # widths of the hidden layers, input to output; [] gives a linear classifier
activation = "relu"      # identity | relu | relu6 | leaky_relu | tanh | sigmoid | gelu | hardtanh
batch_norm = false       # BatchNorm1d after each hidden Linear (which then has no bias)
dropout = 0.0            # dropout probability after each hidden activation
output_batch_norm = false  # BatchNorm1d on the logits (then the classifier has no bias), as the ANA reference's last layer
output_activation = "identity"  # a non-linearity on the output (same choices as activation): relu makes Quantifind's regression model ReLU(Linear)
)toml";

struct MlpSettings {
  std::vector<std::int64_t> hidden;
  std::string activation;
  bool batch_norm;
  double dropout;
  bool output_batch_norm;
  std::string output_activation;
};

class MlpNetwork : public ql::Network {
 public:
  MlpNetwork(const MlpSettings& settings, std::int64_t inputs, std::int64_t outputs) {
    std::int64_t width = inputs;
    for (std::size_t i = 0; i < settings.hidden.size(); ++i) {
      const std::string n = std::to_string(i + 1);
      ql::nn::LinearOptions linear(width, settings.hidden[i]);
      linear.bias = !settings.batch_norm;
      Block block;
      block.linear = register_module("fc" + n, std::make_shared<ql::nn::Linear>(linear));
      if (settings.batch_norm) {
        block.norm = register_module("bn" + n, torch::nn::BatchNorm1d(settings.hidden[i]));
      }
      block.activation = register_module("act" + n, std::make_shared<ql::nn::Activation>(settings.activation));
      if (settings.dropout > 0) block.dropout = register_module("drop" + n, torch::nn::Dropout(settings.dropout));
      blocks_.push_back(std::move(block));
      width = settings.hidden[i];
    }
    ql::nn::LinearOptions classifier(width, outputs);
    classifier.bias = !settings.output_batch_norm;
    classifier_ = register_module("classifier", std::make_shared<ql::nn::Linear>(classifier));
    if (settings.output_batch_norm) output_norm_ = register_module("bn_out", torch::nn::BatchNorm1d(outputs));
    if (settings.output_activation != "identity") {
      output_activation_ = register_module("act_out", std::make_shared<ql::nn::Activation>(settings.output_activation));
    }
  }

  at::Tensor forward(const at::Tensor& input) override {
    at::Tensor x = input.flatten(1);
    for (Block& block : blocks_) {
      x = block.linear->forward(x);
      if (block.norm) x = block.norm->forward(x);
      x = block.activation->forward(x);
      if (block.dropout) x = block.dropout->forward(x);
    }
    x = classifier_->forward(x);
    if (output_norm_) x = output_norm_->forward(x);
    return output_activation_ ? output_activation_->forward(x) : x;
  }

  std::string export_onnx(ql::onnx::Graph& graph, const std::string& input) override {
    std::string x = graph.add("Flatten", {input}, "flatten", {{"axis", std::int64_t{1}}});
    for (std::size_t i = 0; i < blocks_.size(); ++i) {
      const std::string n = std::to_string(i + 1);
      x = ql::onnx::linear(graph, *blocks_[i].linear, x, "fc" + n);
      if (blocks_[i].norm) x = ql::onnx::module(graph, *blocks_[i].norm, x, "bn" + n);
      x = ql::onnx::activation(graph, *blocks_[i].activation, x, "act" + n);
    }
    x = ql::onnx::linear(graph, *classifier_, x, "classifier");
    if (output_norm_) x = ql::onnx::module(graph, *output_norm_, x, "bn_out");
    return output_activation_ ? ql::onnx::activation(graph, *output_activation_, x, "act_out") : x;
  }

 private:
  struct Block {
    std::shared_ptr<ql::nn::Linear> linear;
    torch::nn::BatchNorm1d norm{nullptr};
    std::shared_ptr<ql::nn::Activation> activation;
    torch::nn::Dropout dropout{nullptr};
  };
  std::vector<Block> blocks_;
  std::shared_ptr<ql::nn::Linear> classifier_;
  torch::nn::BatchNorm1d output_norm_{nullptr};
  std::shared_ptr<ql::nn::Activation> output_activation_;
};

class Mlp : public ql::Topology {
 public:
  explicit Mlp(const ql::Config& options) {
    settings_.hidden = options.get_int_list("hidden");
    settings_.output_batch_norm = options.get_bool("output_batch_norm");
    for (std::int64_t width : settings_.hidden) {
      if (width < 1 || width > (1 << 24)) {
        throw ql::ConfigError(options.error_message("hidden", fmt::format("width {} is not in [1, 16777216]", width)));
      }
    }
    auto function = [&](std::string_view key) {
      return options.get_choice(key, {"identity", "relu", "relu6", "leaky_relu", "tanh", "sigmoid", "gelu", "hardtanh"});
    };
    settings_.activation = function("activation");
    settings_.output_activation = function("output_activation");
    settings_.batch_norm = options.get_bool("batch_norm");
    settings_.dropout = options.get_double("dropout", 0.0, 0.99);
  }

  std::shared_ptr<ql::Network> build(const ql::DatasetSpec& spec) override {
    if (spec.input_kind != ql::InputKind::image) {
      throw ql::ConfigError("topology mlp: the problem gives token sequences; an MLP needs fixed-size "
                            "numeric inputs (use the transformer topology)");
    }
    const std::int64_t inputs = std::accumulate(spec.input_shape.begin(), spec.input_shape.end(),
                                                std::int64_t{1}, std::multiplies<>());
    QL_CHECK(inputs > 0 && spec.output_size() > 0, "topology mlp: invalid spec ({} inputs, {} outputs)", inputs,
             spec.output_size());
    return std::make_shared<MlpNetwork>(settings_, inputs, spec.output_size());
  }

 private:
  MlpSettings settings_;
};

}  // namespace

QL_PLUGIN(topology, "mlp", "0.1.0", "multi-layer perceptron of quantisable Linear layers", kOptions, Mlp)
