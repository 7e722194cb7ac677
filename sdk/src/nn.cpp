#include "quantlab/sdk/nn.hpp"

#include "quantlab/sdk/error.hpp"

#include <torch/nn/functional/activation.h>
#include <torch/nn/init.h>

#include <cmath>
#include <vector>

namespace ql::nn {

std::string_view to_string(LayerKind kind) {
  switch (kind) {
    case LayerKind::linear: return "linear";
    case LayerKind::conv2d: return "conv2d";
    case LayerKind::activation: return "activation";
  }
  return "unknown";
}

QuantizableLayer::QuantizableLayer(LayerKind kind) : kind_(kind) {}
QuantizableLayer::~QuantizableLayer() = default;

void QuantizableLayer::set_weight_quantizer(std::shared_ptr<Quantizer> quantizer) {
  weight_quantizer_ = std::move(quantizer);
}

void QuantizableLayer::set_output_quantizer(std::shared_ptr<Quantizer> quantizer) {
  output_quantizer_ = std::move(quantizer);
}

void QuantizableLayer::set_input_observer(InputObserver observer) { input_observer_ = std::move(observer); }

void QuantizableLayer::set_skip_flag(std::shared_ptr<const bool> skip) { skip_ = std::move(skip); }

void QuantizableLayer::observe_input(const at::Tensor& input) const {
  if (input_observer_) input_observer_(input);
}

at::Tensor QuantizableLayer::effective_weight() const {
  return weight_quantizer_ ? weight_quantizer_->forward(weight) : weight;
}

at::Tensor QuantizableLayer::quantize_output(at::Tensor y) const {
  return output_quantizer_ ? output_quantizer_->forward(y) : y;
}

namespace {

// LibTorch's default initialisation (kaiming-uniform with a = sqrt(5), bias from
// U(-1/sqrt(fan_in), 1/sqrt(fan_in))), so quantisable layers train like torch::nn ones.
void reset_like_torch(at::Tensor& weight, at::Tensor& bias, std::int64_t fan_in) {
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    const double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

}  // namespace

Linear::Linear(const LinearOptions& options) : QuantizableLayer(LayerKind::linear), options_(options) {
  QL_CHECK(options.in_features > 0 && options.out_features > 0,
           "Linear: feature counts must be positive, got {} -> {}", options.in_features,
           options.out_features);
  weight = register_parameter("weight", torch::empty({options.out_features, options.in_features}));
  if (options.bias) bias = register_parameter("bias", torch::empty({options.out_features}));
  reset_like_torch(weight, bias, options.in_features);
}

Linear::~Linear() = default;

at::Tensor Linear::forward(const at::Tensor& input) {
  observe_input(input);
  if (skipping()) {
    std::vector<std::int64_t> sizes = input.sizes().vec();
    sizes.back() = options_.out_features;
    return at::zeros(sizes, input.options());
  }
  return quantize_output(at::linear(input, effective_weight(), bias));
}

Conv2d::Conv2d(const Conv2dOptions& options) : QuantizableLayer(LayerKind::conv2d), options_(options) {
  QL_CHECK(options.in_channels > 0 && options.out_channels > 0 && options.groups > 0 &&
               options.in_channels % options.groups == 0 &&
               options.out_channels % options.groups == 0,
           "Conv2d: channels {} -> {} are not positive multiples of groups {}",
           options.in_channels, options.out_channels, options.groups);
  weight = register_parameter(
      "weight", torch::empty({options.out_channels, options.in_channels / options.groups,
                              options.kernel_size[0], options.kernel_size[1]}));
  if (options.bias) bias = register_parameter("bias", torch::empty({options.out_channels}));
  reset_like_torch(weight, bias,
                   options.in_channels / options.groups * options.kernel_size[0] *
                       options.kernel_size[1]);
}

Conv2d::~Conv2d() = default;

at::Tensor Conv2d::forward(const at::Tensor& input) {
  observe_input(input);
  const auto& o = options_;
  if (skipping()) {
    auto side = [&](std::size_t d) {
      return (input.size(static_cast<std::int64_t>(2 + d)) + 2 * o.padding[d] - o.dilation[d] * (o.kernel_size[d] - 1) - 1) /
                 o.stride[d] + 1;
    };
    return at::zeros({input.size(0), o.out_channels, side(0), side(1)}, input.options());
  }
  return quantize_output(at::conv2d(input, effective_weight(), bias, o.stride, o.padding,
                                    o.dilation, o.groups));
}

namespace {

enum ActivationCode { kIdentity, kRelu, kRelu6, kLeakyRelu, kTanh, kSigmoid, kGelu, kHardtanh };

int activation_code(const std::string& function) {
  static constexpr std::pair<const char*, int> kFunctions[] = {
      {"identity", kIdentity}, {"relu", kRelu},       {"relu6", kRelu6}, {"leaky_relu", kLeakyRelu},
      {"tanh", kTanh},         {"sigmoid", kSigmoid}, {"gelu", kGelu},   {"hardtanh", kHardtanh}};
  for (const auto& [name, code] : kFunctions) {
    if (function == name) return code;
  }
  throw ConfigError(fmt::format(
      "unknown activation \"{}\" (expected identity, relu, relu6, leaky_relu, tanh, sigmoid, "
      "gelu or hardtanh)",
      function));
}

}  // namespace

Activation::Activation(std::string function)
    : QuantizableLayer(LayerKind::activation), function_(std::move(function)),
      code_(activation_code(function_)) {}

Activation::~Activation() = default;

at::Tensor Activation::forward(const at::Tensor& x) {
  observe_input(x);
  if (skipping()) return x;
  at::Tensor y;
  switch (code_) {
    case kIdentity: y = x; break;
    case kRelu: y = at::relu(x); break;
    case kRelu6: y = at::hardtanh(x, 0.0, 6.0); break;
    case kLeakyRelu: y = at::leaky_relu(x, 0.01); break;
    case kTanh: y = at::tanh(x); break;
    case kSigmoid: y = at::sigmoid(x); break;
    case kGelu: y = at::gelu(x); break;
    default: y = at::hardtanh(x, -1.0, 1.0); break;
  }
  return quantize_output(std::move(y));
}

}  // namespace ql::nn
