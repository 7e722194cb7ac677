// Residual networks (He et al., 2016): the CIFAR family of depth 6n+2 (3 stages of n basic
// blocks, 16/32/64 channels; option A or B shortcuts) and the ImageNet family of torchvision
// (ResNet-18/34 of basic blocks, 50/101/152 of bottleneck blocks, stride on the 3x3 conv).
// Every convolution, the classifier and every ReLU are SDK quantisable layers; parameter names
// follow torchvision's (conv1, bn1, layer1.0.conv1, ..., fc).
#include "quantlab/sdk/config.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/nn.hpp"
#include "quantlab/sdk/plugin.hpp"
#include "quantlab/sdk/topology.hpp"

#include <limits>

#include <torch/nn/functional/padding.h>
#include <torch/nn/functional/pooling.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>

namespace {

constexpr char kOptions[] = R"toml(
depth = 20                  # CIFAR family: 6n+2 (8, 20, 32, 44, 56, 110, ...); ImageNet family: 18, 34, 50, 101, 152
family = "auto"             # cifar | imagenet | auto: cifar for inputs up to 64x64, imagenet above
shortcut = "A"              # cifar family: A (identity, stride-2 subsampling, zero-padded channels; no parameters) | B (1x1 conv + BN projection)
zero_init_residual = false  # start the last BN of every block at zero, so each block begins as the identity
)toml";

using ql::nn::Activation;
using ql::nn::Conv2d;
using ql::nn::Conv2dOptions;

std::shared_ptr<Conv2d> conv(std::int64_t in, std::int64_t out, std::int64_t kernel, std::int64_t stride) {
  Conv2dOptions options(in, out, kernel);
  options.stride = {stride, stride};
  options.padding = {kernel / 2, kernel / 2};
  options.bias = false;
  auto layer = std::make_shared<Conv2d>(options);
  // He initialisation (fan-out), as torchvision's ResNet.
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_normal_(layer->weight, 0.0, torch::kFanOut, torch::kReLU);
  return layer;
}

torch::nn::BatchNorm2d batch_norm(std::int64_t channels) { return torch::nn::BatchNorm2d(channels); }

// A residual block: body(x) + shortcut(x), then ReLU.
class Block : public torch::nn::Module {
 public:
  virtual at::Tensor forward(const at::Tensor& x) = 0;
  virtual torch::nn::BatchNorm2d& last_norm() = 0;
  /// The block's nodes from `x`, names under `name` ("layer1.0"); returns the output's name.
  virtual std::string export_onnx(ql::onnx::Graph& graph, const std::string& x, const std::string& name) = 0;
};

class BasicBlock : public Block {
 public:
  // `option_a`: parameter-free shortcut (CIFAR option A) when the shape changes.
  BasicBlock(std::int64_t in, std::int64_t planes, std::int64_t stride, bool option_a) {
    conv1_ = register_module("conv1", conv(in, planes, 3, stride));
    bn1_ = register_module("bn1", batch_norm(planes));
    relu1_ = register_module("relu1", std::make_shared<Activation>("relu"));
    conv2_ = register_module("conv2", conv(planes, planes, 3, 1));
    bn2_ = register_module("bn2", batch_norm(planes));
    relu2_ = register_module("relu2", std::make_shared<Activation>("relu"));
    if (stride != 1 || in != planes) {
      if (option_a) {
        pad_channels_ = planes - in;
        subsample_ = stride;
      } else {
        downsample_ = register_module("downsample", torch::nn::Sequential(conv(in, planes, 1, stride), batch_norm(planes)));
      }
    }
  }

  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor out = bn2_->forward(conv2_->forward(relu1_->forward(bn1_->forward(conv1_->forward(x)))));
    return relu2_->forward(out + shortcut(x));
  }
  torch::nn::BatchNorm2d& last_norm() override { return bn2_; }

  std::string export_onnx(ql::onnx::Graph& graph, const std::string& x, const std::string& name) override {
    std::string out = ql::onnx::conv2d(graph, *conv1_, x, name + ".conv1");
    out = ql::onnx::module(graph, *bn1_, out, name + ".bn1");
    out = ql::onnx::activation(graph, *relu1_, out, name + ".relu1");
    out = ql::onnx::conv2d(graph, *conv2_, out, name + ".conv2");
    out = ql::onnx::module(graph, *bn2_, out, name + ".bn2");
    const std::string sum = graph.add("Add", {out, export_shortcut(graph, x, name)}, name + ".add");
    return ql::onnx::activation(graph, *relu2_, sum, name + ".relu2");
  }

 private:
  // Option A: every subsample_-th row and column (Slice), channels zero-padded on both sides (Pad).
  std::string export_shortcut(ql::onnx::Graph& graph, const std::string& x, const std::string& name) {
    if (downsample_) return ql::onnx::module(graph, *downsample_, x, name + ".downsample");
    if (subsample_ == 1 && pad_channels_ == 0) return x;
    const auto constant = [&](const char* what, std::vector<std::int64_t> values) {
      return graph.constant(name + ".shortcut." + what, torch::tensor(values));
    };
    const std::int64_t end = std::numeric_limits<std::int64_t>::max();
    const std::string sub = graph.add("Slice", {x, constant("starts", {0, 0}), constant("ends", {end, end}),
                                                constant("axes", {2, 3}), constant("steps", {subsample_, subsample_})},
                                      name + ".shortcut.subsample");
    const std::int64_t before = pad_channels_ / 2, after = pad_channels_ - before;
    return graph.add("Pad", {sub, constant("pads", {0, before, 0, 0, 0, after, 0, 0})}, name + ".shortcut");
  }

  at::Tensor shortcut(const at::Tensor& x) {
    if (downsample_) return downsample_->forward(x);
    if (subsample_ == 1 && pad_channels_ == 0) return x;
    const at::Tensor sub = x.slice(2, 0, c10::nullopt, subsample_).slice(3, 0, c10::nullopt, subsample_);
    namespace F = torch::nn::functional;
    return F::pad(sub, F::PadFuncOptions({0, 0, 0, 0, pad_channels_ / 2, pad_channels_ - pad_channels_ / 2}));
  }

  std::shared_ptr<Conv2d> conv1_, conv2_;
  torch::nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr};
  std::shared_ptr<Activation> relu1_, relu2_;
  torch::nn::Sequential downsample_{nullptr};
  std::int64_t pad_channels_ = 0;
  std::int64_t subsample_ = 1;
};

class Bottleneck : public Block {
 public:
  static constexpr std::int64_t kExpansion = 4;
  Bottleneck(std::int64_t in, std::int64_t planes, std::int64_t stride) {
    conv1_ = register_module("conv1", conv(in, planes, 1, 1));
    bn1_ = register_module("bn1", batch_norm(planes));
    relu1_ = register_module("relu1", std::make_shared<Activation>("relu"));
    conv2_ = register_module("conv2", conv(planes, planes, 3, stride));
    bn2_ = register_module("bn2", batch_norm(planes));
    relu2_ = register_module("relu2", std::make_shared<Activation>("relu"));
    conv3_ = register_module("conv3", conv(planes, planes * kExpansion, 1, 1));
    bn3_ = register_module("bn3", batch_norm(planes * kExpansion));
    relu3_ = register_module("relu3", std::make_shared<Activation>("relu"));
    if (stride != 1 || in != planes * kExpansion) {
      downsample_ = register_module(
          "downsample", torch::nn::Sequential(conv(in, planes * kExpansion, 1, stride), batch_norm(planes * kExpansion)));
    }
  }

  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor out = relu1_->forward(bn1_->forward(conv1_->forward(x)));
    out = relu2_->forward(bn2_->forward(conv2_->forward(out)));
    out = bn3_->forward(conv3_->forward(out));
    return relu3_->forward(out + (downsample_ ? downsample_->forward(x) : x));
  }
  torch::nn::BatchNorm2d& last_norm() override { return bn3_; }

  std::string export_onnx(ql::onnx::Graph& graph, const std::string& x, const std::string& name) override {
    std::string out = x;
    const std::pair<Conv2d*, torch::nn::BatchNorm2dImpl*> stages[] = {
        {conv1_.get(), bn1_.get()}, {conv2_.get(), bn2_.get()}, {conv3_.get(), bn3_.get()}};
    Activation* relus[] = {relu1_.get(), relu2_.get()};
    for (int k = 0; k < 3; ++k) {
      const std::string n = std::to_string(k + 1);
      out = ql::onnx::conv2d(graph, *stages[k].first, out, name + ".conv" + n);
      out = ql::onnx::module(graph, *stages[k].second, out, name + ".bn" + n);
      if (k < 2) out = ql::onnx::activation(graph, *relus[k], out, name + ".relu" + n);
    }
    const std::string shortcut = downsample_ ? ql::onnx::module(graph, *downsample_, x, name + ".downsample") : x;
    return ql::onnx::activation(graph, *relu3_, graph.add("Add", {out, shortcut}, name + ".add"), name + ".relu3");
  }

 private:
  std::shared_ptr<Conv2d> conv1_, conv2_, conv3_;
  torch::nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr}, bn3_{nullptr};
  std::shared_ptr<Activation> relu1_, relu2_, relu3_;
  torch::nn::Sequential downsample_{nullptr};
};

struct Settings {
  std::int64_t depth;
  std::string family;
  bool option_a;
  bool zero_init_residual;
};

class ResNetNetwork : public ql::Network {
 public:
  ResNetNetwork(const Settings& s, bool imagenet, std::int64_t in_channels, std::int64_t classes) {
    std::int64_t width;
    if (imagenet) {
      width = 64;
      conv1_ = register_module("conv1", conv(in_channels, 64, 7, 2));
      bn1_ = register_module("bn1", batch_norm(64));
      relu_ = register_module("relu", std::make_shared<Activation>("relu"));
      max_pool_ = true;
      const bool bottleneck = s.depth >= 50;
      const std::vector<std::int64_t> counts = s.depth == 18   ? std::vector<std::int64_t>{2, 2, 2, 2}
                                               : s.depth == 101 ? std::vector<std::int64_t>{3, 4, 23, 3}
                                               : s.depth == 152 ? std::vector<std::int64_t>{3, 8, 36, 3}
                                                                : std::vector<std::int64_t>{3, 4, 6, 3};
      std::int64_t planes = 64;
      for (std::size_t stage = 0; stage < counts.size(); ++stage, planes *= 2) {
        torch::nn::Sequential layer;
        for (std::int64_t b = 0; b < counts[stage]; ++b) {
          const std::int64_t stride = stage > 0 && b == 0 ? 2 : 1;
          if (bottleneck) {
            add(layer, std::make_shared<Bottleneck>(width, planes, stride));
            width = planes * Bottleneck::kExpansion;
          } else {
            add(layer, std::make_shared<BasicBlock>(width, planes, stride, false));
            width = planes;
          }
        }
        register_module("layer" + std::to_string(stage + 1), layer);
      }
    } else {
      width = 16;
      conv1_ = register_module("conv1", conv(in_channels, 16, 3, 1));
      bn1_ = register_module("bn1", batch_norm(16));
      relu_ = register_module("relu", std::make_shared<Activation>("relu"));
      const std::int64_t n = (s.depth - 2) / 6;
      std::int64_t planes = 16;
      for (int stage = 0; stage < 3; ++stage, planes *= 2) {
        torch::nn::Sequential layer;
        for (std::int64_t b = 0; b < n; ++b) {
          add(layer, std::make_shared<BasicBlock>(width, planes, stage > 0 && b == 0 ? 2 : 1, s.option_a));
          width = planes;
        }
        register_module("layer" + std::to_string(stage + 1), layer);
      }
    }
    fc_ = register_module("fc", std::make_shared<ql::nn::Linear>(ql::nn::LinearOptions(width, classes)));
    if (s.zero_init_residual) {
      torch::NoGradGuard no_grad;
      for (auto& block : blocks_) block->last_norm()->weight.zero_();
    }
  }

  template <typename B>
  void add(torch::nn::Sequential& layer, std::shared_ptr<B> block) {
    layer->push_back(block);
    blocks_.push_back(std::move(block));
  }

  at::Tensor forward(const at::Tensor& input) override {
    namespace F = torch::nn::functional;
    at::Tensor x = relu_->forward(bn1_->forward(conv1_->forward(input)));
    if (max_pool_) x = F::max_pool2d(x, F::MaxPool2dFuncOptions(3).stride(2).padding(1));
    for (auto& block : blocks_) x = block->forward(x);
    return fc_->forward(F::adaptive_avg_pool2d(x, F::AdaptiveAvgPool2dFuncOptions(1)).flatten(1));
  }

  std::string export_onnx(ql::onnx::Graph& graph, const std::string& input) override {
    std::string x = ql::onnx::conv2d(graph, *conv1_, input, "conv1");
    x = ql::onnx::activation(graph, *relu_, ql::onnx::module(graph, *bn1_, x, "bn1"), "relu");
    if (max_pool_) {
      x = graph.add("MaxPool", {x}, "maxpool",
                    {{"kernel_shape", std::vector<std::int64_t>{3, 3}}, {"strides", std::vector<std::int64_t>{2, 2}},
                     {"pads", std::vector<std::int64_t>{1, 1, 1, 1}}});
    }
    // The blocks under torchvision's names: layerN.K.
    for (const auto& layer : named_children()) {
      auto* sequence = dynamic_cast<torch::nn::SequentialImpl*>(layer.value().get());
      if (sequence == nullptr) continue;
      for (const auto& block : sequence->named_children()) {
        x = dynamic_cast<Block&>(*block.value()).export_onnx(graph, x, layer.key() + "." + block.key());
      }
    }
    x = graph.add("Flatten", {graph.add("GlobalAveragePool", {x}, "avgpool")}, "flatten", {{"axis", std::int64_t{1}}});
    return ql::onnx::linear(graph, *fc_, x, "fc");
  }

 private:
  std::shared_ptr<Conv2d> conv1_;
  torch::nn::BatchNorm2d bn1_{nullptr};
  std::shared_ptr<Activation> relu_;
  bool max_pool_ = false;
  // Blocks in order; the Sequential "layerN" containers only name them as torchvision does.
  std::vector<std::shared_ptr<Block>> blocks_;
  std::shared_ptr<ql::nn::Linear> fc_;
};

class ResNet : public ql::Topology {
 public:
  explicit ResNet(const ql::Config& options) {
    settings_.depth = options.get_int("depth", 8, 1000);
    settings_.family = options.get_choice("family", {"auto", "cifar", "imagenet"});
    settings_.option_a = options.get_choice("shortcut", {"A", "B"}) == "A";
    settings_.zero_init_residual = options.get_bool("zero_init_residual");
    const bool imagenet_depth = settings_.depth == 18 || settings_.depth == 34 || settings_.depth == 50 ||
                                settings_.depth == 101 || settings_.depth == 152;
    const bool cifar_depth = (settings_.depth - 2) % 6 == 0;
    if (settings_.family == "imagenet" && !imagenet_depth) {
      throw ql::ConfigError(options.error_message("depth", "the ImageNet family has depths 18, 34, 50, 101, 152"));
    }
    if (settings_.family == "cifar" && !cifar_depth) {
      throw ql::ConfigError(options.error_message("depth", "the CIFAR family has depths 6n+2 (8, 20, 32, 44, 56, 110)"));
    }
    if (!cifar_depth && !imagenet_depth) {
      throw ql::ConfigError(options.error_message(
          "depth", "expected 6n+2 (CIFAR family) or 18, 34, 50, 101, 152 (ImageNet family)"));
    }
    where_ = options.where("depth");
  }

  std::shared_ptr<ql::Network> build(const ql::DatasetSpec& spec) override {
    if (spec.input_kind != ql::InputKind::image || spec.input_shape.size() != 3) {
      throw ql::ConfigError("topology resnet: needs images (channels x height x width)");
    }
    const std::int64_t side = std::min(spec.input_shape[1], spec.input_shape[2]);
    std::string family = settings_.family;
    if (family == "auto") family = side > 64 ? "imagenet" : "cifar";
    const bool cifar_depth = (settings_.depth - 2) % 6 == 0;
    const std::int64_t d = settings_.depth;
    const bool imagenet_depth = d == 18 || d == 34 || d == 50 || d == 101 || d == 152;
    if (family == "cifar" && !cifar_depth) {
      throw ql::ConfigError(fmt::format("{}: topology resnet: depth {} is an ImageNet depth but the inputs are "
                                        "{}x{}; set family = \"imagenet\" or a CIFAR depth (6n+2)",
                                        where_, settings_.depth, spec.input_shape[1], spec.input_shape[2]));
    }
    if (family == "imagenet" && !imagenet_depth) {
      throw ql::ConfigError(fmt::format("{}: topology resnet: depth {} is a CIFAR depth but the inputs are {}x{}; "
                                        "set family = \"cifar\" or an ImageNet depth",
                                        where_, settings_.depth, spec.input_shape[1], spec.input_shape[2]));
    }
    const std::int64_t minimum = family == "imagenet" ? 32 : 4;
    if (side < minimum) {
      throw ql::ConfigError(fmt::format("topology resnet: the {} family needs inputs of at least {}x{}, got {}x{}",
                                        family, minimum, minimum, spec.input_shape[1], spec.input_shape[2]));
    }
    return std::make_shared<ResNetNetwork>(settings_, family == "imagenet", spec.input_shape[0], spec.output_size());
  }

 private:
  Settings settings_;
  std::string where_;
};

}  // namespace

QL_PLUGIN(topology, "resnet", "0.1.0", "residual networks: CIFAR ResNet-6n+2 and ImageNet ResNet-18..152", kOptions,
          ResNet)
