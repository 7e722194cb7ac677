// Small convolutional networks of the reference experiments: the CIFAR-10 CNN of the GPFQ
// paper (Lybrand & Saab; docs/algorithms/greedy.md) and the MNIST conv net of Quantifind (docs/algorithms/uniform.md).
// Every convolution, Linear and ReLU is an SDK quantisable layer.
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
config = "gpfq_cifar10"   # gpfq_cifar10: 3 blocks of two 3x3 convs (32, 64, 128; ReLU then BN), max pool, dropout .2/.3/.4, FC 128 + BN + dropout .5 | quantifind_mnist: 3x3 convs 32, 64, 128 each with ReLU and max pool, one FC
dropout = true            # gpfq_cifar10: the reference's dropout layers (false: none)
)toml";

std::shared_ptr<ql::nn::Conv2d> conv3x3(std::int64_t in, std::int64_t out) {
  ql::nn::Conv2dOptions options(in, out, 3);
  options.padding = {1, 1};
  return std::make_shared<ql::nn::Conv2d>(options);
}

std::shared_ptr<ql::nn::Activation> relu() { return std::make_shared<ql::nn::Activation>("relu"); }
torch::nn::MaxPool2d pool() { return torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).stride(2)); }

class ConvNetwork : public ql::Network {
 public:
  ConvNetwork(const std::string& config, bool dropout, const std::vector<std::int64_t>& shape, std::int64_t classes) {
    std::int64_t channels = shape[0];
    const std::int64_t side = shape[1] / 8 * (shape[2] / 8);  // after three 2x2 pools
    if (config == "gpfq_cifar10") {
      const double rates[] = {0.2, 0.3, 0.4};
      int block = 0;
      for (std::int64_t width : {32, 64, 128}) {
        for (int i = 0; i < 2; ++i) {
          features_->push_back(conv3x3(channels, width));
          features_->push_back(relu());
          features_->push_back(torch::nn::BatchNorm2d(width));
          channels = width;
        }
        features_->push_back(pool());
        if (dropout) features_->push_back(torch::nn::Dropout(rates[block]));
        ++block;
      }
      classifier_->push_back(std::make_shared<ql::nn::Linear>(ql::nn::LinearOptions(channels * side, 128)));
      classifier_->push_back(relu());
      classifier_->push_back(torch::nn::BatchNorm1d(128));
      if (dropout) classifier_->push_back(torch::nn::Dropout(0.5));
      classifier_->push_back(std::make_shared<ql::nn::Linear>(ql::nn::LinearOptions(128, classes)));
    } else {
      for (std::int64_t width : {32, 64, 128}) {
        features_->push_back(conv3x3(channels, width));
        features_->push_back(relu());
        features_->push_back(pool());
        channels = width;
      }
      classifier_->push_back(std::make_shared<ql::nn::Linear>(ql::nn::LinearOptions(channels * side, classes)));
    }
    register_module("features", features_);
    register_module("classifier", classifier_);
  }

  at::Tensor forward(const at::Tensor& input) override {
    return classifier_->forward(features_->forward(input).flatten(1));
  }

  std::string export_onnx(ql::onnx::Graph& graph, const std::string& input) override {
    const std::string features = ql::onnx::module(graph, *features_, input, "features");
    const std::string flat = graph.add("Flatten", {features}, "flatten", {{"axis", std::int64_t{1}}});
    return ql::onnx::module(graph, *classifier_, flat, "classifier");
  }

 private:
  torch::nn::Sequential features_;
  torch::nn::Sequential classifier_;
};

class ConvNet : public ql::Topology {
 public:
  explicit ConvNet(const ql::Config& options)
      : config_(options.get_choice("config", {"gpfq_cifar10", "quantifind_mnist"})), dropout_(options.get_bool("dropout")) {}

  std::shared_ptr<ql::Network> build(const ql::DatasetSpec& spec) override {
    if (spec.input_kind != ql::InputKind::image || spec.input_shape.size() != 3) {
      throw ql::ConfigError("topology convnet: needs images (channels x height x width)");
    }
    if (spec.input_shape[1] < 8 || spec.input_shape[2] < 8) {
      throw ql::ConfigError(fmt::format("topology convnet: three 2x2 max pools need inputs of at least 8x8, got {}x{}",
                                        spec.input_shape[1], spec.input_shape[2]));
    }
    return std::make_shared<ConvNetwork>(config_, dropout_, spec.input_shape, spec.output_size());
  }

 private:
  std::string config_;
  bool dropout_;
};

}  // namespace

QL_PLUGIN(topology, "convnet", "0.1.0", "small CNNs of the GPFQ (CIFAR-10) and Quantifind (MNIST) experiments", kOptions,
          ConvNet)
