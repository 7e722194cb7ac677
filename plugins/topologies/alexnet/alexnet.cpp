// AlexNet (Krizhevsky et al., 2012) in torchvision's layout (61,100,840 parameters for 1000
// classes; names features.N / classifier.N as there), and the batch-norm variant used for
// quantised training in the ANA work (docs/algorithms/ana.md): convolutions and Linear layers
// without bias, max pool before BN, BN after every layer including the last, no dropout.
#include "quantlab/sdk/config.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/nn.hpp"
#include "quantlab/sdk/plugin.hpp"
#include "quantlab/sdk/topology.hpp"

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/pooling.h>

namespace {

constexpr char kOptions[] = R"toml(
batch_norm = false   # false: torchvision's AlexNet | true: the BN variant for quantised training (no biases, BN after every layer)
dropout = 0.5        # torchvision layout: dropout before the two hidden Linear layers
)toml";

// Side length after the feature extractor for a square input of side `n` (0: too small).
std::int64_t feature_side(std::int64_t n) {
  auto conv = [](std::int64_t x, std::int64_t k, std::int64_t s, std::int64_t p) { return (x + 2 * p - k) / s + 1; };
  auto pool = [](std::int64_t x) { return x >= 3 ? (x - 3) / 2 + 1 : 0; };
  n = conv(n, 11, 4, 2);
  if (n < 1) return 0;
  n = pool(n);
  n = conv(n, 5, 1, 2);
  n = pool(n);
  return pool(n);  // the three 3x3 convolutions keep the size
}

std::shared_ptr<ql::nn::Conv2d> conv(std::int64_t in, std::int64_t out, std::int64_t kernel, std::int64_t stride,
                                     std::int64_t padding, bool bias) {
  ql::nn::Conv2dOptions options(in, out, kernel);
  options.stride = {stride, stride};
  options.padding = {padding, padding};
  options.bias = bias;
  return std::make_shared<ql::nn::Conv2d>(options);
}

std::shared_ptr<ql::nn::Linear> linear(std::int64_t in, std::int64_t out, bool bias) {
  ql::nn::LinearOptions options(in, out);
  options.bias = bias;
  return std::make_shared<ql::nn::Linear>(options);
}

torch::nn::MaxPool2d max_pool() { return torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2)); }

class AlexNetNetwork : public ql::Network {
 public:
  AlexNetNetwork(bool bn, double dropout, std::int64_t channels, std::int64_t classes) {
    struct ConvSpec {
      std::int64_t out, kernel, stride, padding;
      bool pooled;
    };
    const std::vector<ConvSpec> convs{{64, 11, 4, 2, true}, {192, 5, 1, 2, true}, {384, 3, 1, 1, false},
                                      {256, 3, 1, 1, false}, {256, 3, 1, 1, true}};
    for (const ConvSpec& c : convs) {
      features_->push_back(conv(channels, c.out, c.kernel, c.stride, c.padding, !bn));
      if (bn) {
        if (c.pooled) features_->push_back(max_pool());
        features_->push_back(torch::nn::BatchNorm2d(c.out));
        features_->push_back(std::make_shared<ql::nn::Activation>("relu"));
      } else {
        features_->push_back(std::make_shared<ql::nn::Activation>("relu"));
        if (c.pooled) features_->push_back(max_pool());
      }
      channels = c.out;
    }
    pool_ = torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions({6, 6}));
    const std::int64_t flat = 256 * 6 * 6;
    if (bn) {
      classifier_->push_back(linear(flat, 4096, false));
      classifier_->push_back(torch::nn::BatchNorm1d(4096));
      classifier_->push_back(std::make_shared<ql::nn::Activation>("relu"));
      classifier_->push_back(linear(4096, 4096, false));
      classifier_->push_back(torch::nn::BatchNorm1d(4096));
      classifier_->push_back(std::make_shared<ql::nn::Activation>("relu"));
      classifier_->push_back(linear(4096, classes, false));
      classifier_->push_back(torch::nn::BatchNorm1d(classes));
    } else {
      classifier_->push_back(torch::nn::Dropout(dropout));
      classifier_->push_back(linear(flat, 4096, true));
      classifier_->push_back(std::make_shared<ql::nn::Activation>("relu"));
      classifier_->push_back(torch::nn::Dropout(dropout));
      classifier_->push_back(linear(4096, 4096, true));
      classifier_->push_back(std::make_shared<ql::nn::Activation>("relu"));
      classifier_->push_back(linear(4096, classes, true));
    }
    register_module("features", features_);
    register_module("avgpool", pool_);
    register_module("classifier", classifier_);
  }

  at::Tensor forward(const at::Tensor& input) override {
    return classifier_->forward(pool_->forward(features_->forward(input)).flatten(1));
  }

  std::string export_onnx(ql::onnx::Graph& graph, const std::string& input) override {
    std::string x = ql::onnx::module(graph, *features_, input, "features");
    const at::Tensor maps = features_->forward(graph.example_input());
    x = ql::onnx::adaptive_average_pool(graph, *pool_, maps.size(2), maps.size(3), x, "avgpool");
    x = graph.add("Flatten", {x}, "flatten", {{"axis", std::int64_t{1}}});
    return ql::onnx::module(graph, *classifier_, x, "classifier");
  }

 private:
  torch::nn::Sequential features_;
  torch::nn::AdaptiveAvgPool2d pool_{nullptr};
  torch::nn::Sequential classifier_;
};

class AlexNet : public ql::Topology {
 public:
  explicit AlexNet(const ql::Config& options)
      : batch_norm_(options.get_bool("batch_norm")), dropout_(options.get_double("dropout", 0.0, 0.99)) {}

  std::shared_ptr<ql::Network> build(const ql::DatasetSpec& spec) override {
    if (spec.input_kind != ql::InputKind::image || spec.input_shape.size() != 3) {
      throw ql::ConfigError("topology alexnet: needs images (channels x height x width)");
    }
    const std::int64_t side = std::min(spec.input_shape[1], spec.input_shape[2]);
    if (feature_side(side) < 1) {
      std::int64_t minimum = side;
      while (feature_side(minimum) < 1) ++minimum;
      throw ql::ConfigError(fmt::format("topology alexnet: inputs of {}x{} are too small for its 11x11/4 stem and "
                                        "three max pools; it needs at least {}x{} (ImageNet uses 224x224)",
                                        spec.input_shape[1], spec.input_shape[2], minimum, minimum));
    }
    return std::make_shared<AlexNetNetwork>(batch_norm_, dropout_, spec.input_shape[0], spec.output_size());
  }

 private:
  bool batch_norm_;
  double dropout_;
};

}  // namespace

QL_PLUGIN(topology, "alexnet", "0.1.0", "AlexNet (torchvision layout) and its batch-norm variant", kOptions, AlexNet)
