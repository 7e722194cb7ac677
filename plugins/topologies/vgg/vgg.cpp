// VGG networks: the ImageNet VGG-11/13/16/19 of torchvision (with or without batch norm,
// parameter names features.N / classifier.N as there) and the CIFAR-10 VGG-like nets of the
// ANA work (docs/algorithms/ana.md): "vgg_ana" (6 conv + 3 FC, `capacity` width multiplier, max pool
// before BN, BN after every layer including the last), and the VGG8 / VGG9 of the new
// QuantLab. Every convolution, Linear and ReLU is an SDK quantisable layer.
#include "quantlab/sdk/config.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/nn.hpp"
#include "quantlab/sdk/plugin.hpp"
#include "quantlab/sdk/topology.hpp"

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>

#include <cmath>

namespace {

constexpr char kOptions[] = R"toml(
config = "vgg16"       # vgg11 | vgg13 | vgg16 | vgg19 (ImageNet, torchvision) | vgg_ana (CIFAR-10, 6 conv + 3 FC) | vgg8 | vgg9 (CIFAR-10, new QuantLab)
batch_norm = false     # vgg11..vgg19: BatchNorm2d after every convolution (the "_bn" models); the CIFAR nets always have BN
capacity = 1.0         # vgg_ana, vgg8, vgg9: multiplies every hidden width (1.0: 128..512 channels, 1024-wide FC)
dropout = 0.5          # vgg11..vgg19: dropout before the hidden Linear layers of the classifier
activation = "relu"    # the non-linearity: relu | identity (for ANA, whose quantised activation replaces it) | any of ql::nn::Activation's
)toml";

constexpr std::int64_t kPool = -1;  // 'M' in the layer lists

std::vector<std::int64_t> imagenet_layers(const std::string& config) {
  if (config == "vgg11") return {64, kPool, 128, kPool, 256, 256, kPool, 512, 512, kPool, 512, 512, kPool};
  if (config == "vgg13") return {64, 64, kPool, 128, 128, kPool, 256, 256, kPool, 512, 512, kPool, 512, 512, kPool};
  if (config == "vgg16") {
    return {64, 64, kPool, 128, 128, kPool, 256, 256, 256, kPool, 512, 512, 512, kPool, 512, 512, 512, kPool};
  }
  return {64,  64,  kPool, 128, 128, kPool, 256, 256, 256, 256, kPool,
          512, 512, 512,   512, kPool, 512, 512, 512, 512, kPool};
}

std::shared_ptr<ql::nn::Conv2d> conv3x3(std::int64_t in, std::int64_t out, bool bias) {
  ql::nn::Conv2dOptions options(in, out, 3);
  options.padding = {1, 1};
  options.bias = bias;
  return std::make_shared<ql::nn::Conv2d>(options);
}

std::shared_ptr<ql::nn::Linear> linear(std::int64_t in, std::int64_t out, bool bias = true) {
  ql::nn::LinearOptions options(in, out);
  options.bias = bias;
  return std::make_shared<ql::nn::Linear>(options);
}

struct Settings {
  std::string config;
  std::string activation;
  bool batch_norm;
  double capacity;
  double dropout;
};

class VggNetwork : public ql::Network {
  std::shared_ptr<ql::nn::Activation> activation() const {
    return std::make_shared<ql::nn::Activation>(activation_);
  }
  std::string activation_;

 public:
  VggNetwork(const Settings& s, std::int64_t channels, std::int64_t classes) : activation_(s.activation) {
    if (s.config == "vgg_ana") {
      build_ana(s, channels, classes);
    } else if (s.config == "vgg8" || s.config == "vgg9") {
      build_new_quantlab(s, channels, classes);
    } else {
      build_imagenet(s, channels, classes);
    }
    register_module("features", features_);
    if (pool_) register_module("avgpool", pool_);
    register_module("classifier", classifier_);
  }

  at::Tensor forward(const at::Tensor& input) override {
    at::Tensor x = features_->forward(input);
    if (pool_) x = pool_->forward(x);
    return classifier_->forward(x.flatten(1));
  }

  std::string export_onnx(ql::onnx::Graph& graph, const std::string& input) override {
    std::string x = ql::onnx::module(graph, *features_, input, "features");
    if (pool_) {
      const at::Tensor maps = features_->forward(graph.example_input());
      x = ql::onnx::adaptive_average_pool(graph, *pool_, maps.size(2), maps.size(3), x, "avgpool");
    }
    x = graph.add("Flatten", {x}, "flatten", {{"axis", std::int64_t{1}}});
    return ql::onnx::module(graph, *classifier_, x, "classifier");
  }

 private:
  void build_imagenet(const Settings& s, std::int64_t channels, std::int64_t classes) {
    for (std::int64_t width : imagenet_layers(s.config)) {
      if (width == kPool) {
        features_->push_back(torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).stride(2)));
        continue;
      }
      features_->push_back(conv3x3(channels, width, true));
      if (s.batch_norm) features_->push_back(torch::nn::BatchNorm2d(width));
      features_->push_back(activation());
      channels = width;
    }
    pool_ = torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions({7, 7}));
    classifier_->push_back(linear(512 * 7 * 7, 4096));
    classifier_->push_back(activation());
    classifier_->push_back(torch::nn::Dropout(s.dropout));
    classifier_->push_back(linear(4096, 4096));
    classifier_->push_back(activation());
    classifier_->push_back(torch::nn::Dropout(s.dropout));
    classifier_->push_back(linear(4096, classes));
  }

  // conv(bias=False) -> [MaxPool] -> BN -> ReLU; the last Linear is followed by BN1d(classes).
  void build_ana(const Settings& s, std::int64_t channels, std::int64_t classes) {
    auto width = [&](double base) { return static_cast<std::int64_t>(std::lround(base * s.capacity)); };
    const std::vector<std::pair<std::int64_t, bool>> layers{{width(128), false}, {width(128), true},
                                                            {width(256), false}, {width(256), true},
                                                            {width(512), false}, {width(512), true}};
    for (const auto& [out, pooled] : layers) {
      features_->push_back(conv3x3(channels, out, false));
      if (pooled) features_->push_back(torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).stride(2)));
      features_->push_back(torch::nn::BatchNorm2d(out));
      features_->push_back(activation());
      channels = out;
    }
    add_cifar_classifier(channels, width(1024), classes, /*final_norm=*/true);
  }

  // A 128-channel pilot conv, then the feature list; BN after each conv and hidden FC.
  void build_new_quantlab(const Settings& s, std::int64_t channels, std::int64_t classes) {
    auto width = [&](double base) { return static_cast<std::int64_t>(std::lround(base * s.capacity)); };
    std::vector<std::int64_t> layers{width(128)};
    if (s.config == "vgg9") layers.push_back(width(128));
    for (std::int64_t w : {kPool, width(256), width(256), kPool, width(512), width(512), kPool}) layers.push_back(w);
    for (std::int64_t out : layers) {
      if (out == kPool) {
        features_->push_back(torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).stride(2)));
        continue;
      }
      features_->push_back(conv3x3(channels, out, false));
      features_->push_back(torch::nn::BatchNorm2d(out));
      features_->push_back(activation());
      channels = out;
    }
    add_cifar_classifier(channels, width(1024), classes, /*final_norm=*/false);
  }

  // Average pool 4x4, then Linear-BN-ReLU twice (no biases) and the last Linear: followed by
  // BN1d(classes) without bias (ANA) or with a bias and no BN (new QuantLab).
  void add_cifar_classifier(std::int64_t channels, std::int64_t hidden, std::int64_t classes, bool final_norm) {
    pool_ = torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions({4, 4}));
    std::int64_t in = channels * 16;
    for (int i = 0; i < 2; ++i, in = hidden) {
      classifier_->push_back(linear(in, hidden, false));
      classifier_->push_back(torch::nn::BatchNorm1d(hidden));
      classifier_->push_back(activation());
    }
    classifier_->push_back(linear(hidden, classes, !final_norm));
    if (final_norm) classifier_->push_back(torch::nn::BatchNorm1d(classes));
  }

  torch::nn::Sequential features_;
  torch::nn::AdaptiveAvgPool2d pool_{nullptr};
  torch::nn::Sequential classifier_;
};

class Vgg : public ql::Topology {
 public:
  explicit Vgg(const ql::Config& options) {
    settings_.config = options.get_choice("config", {"vgg11", "vgg13", "vgg16", "vgg19", "vgg_ana", "vgg8", "vgg9"});
    settings_.batch_norm = options.get_bool("batch_norm");
    settings_.capacity = options.get_double("capacity", 1.0 / 128, 64.0);
    settings_.activation = options.get_choice(
        "activation", {"relu", "identity", "relu6", "leaky_relu", "tanh", "sigmoid", "gelu", "hardtanh"});
    settings_.dropout = options.get_double("dropout", 0.0, 0.99);
  }

  std::shared_ptr<ql::Network> build(const ql::DatasetSpec& spec) override {
    if (spec.input_kind != ql::InputKind::image || spec.input_shape.size() != 3) {
      throw ql::ConfigError("topology vgg: needs images (channels x height x width)");
    }
    // Five (ImageNet) or three (CIFAR nets) 2x2 poolings must leave at least one pixel.
    const std::int64_t pools = settings_.config.rfind("vgg1", 0) == 0 ? 5 : 3;
    const std::int64_t minimum = std::int64_t{1} << pools;
    if (spec.input_shape[1] < minimum || spec.input_shape[2] < minimum) {
      throw ql::ConfigError(fmt::format("topology vgg: {} halves the image {} times and needs inputs of at least "
                                        "{}x{}, got {}x{}",
                                        settings_.config, pools, minimum, minimum, spec.input_shape[1],
                                        spec.input_shape[2]));
    }
    return std::make_shared<VggNetwork>(settings_, spec.input_shape[0], spec.output_size());
  }

 private:
  Settings settings_;
};

}  // namespace

QL_PLUGIN(topology, "vgg", "0.1.0", "VGG-11/13/16/19 (ImageNet) and the VGG-like CIFAR-10 nets of ANA", kOptions, Vgg)
