// Quantisable layers: the building blocks topologies use wherever a layer may be quantised.
// Each owns its float parameters and two quantiser slots, for its weights and its outputs;
// an empty slot costs nothing. Algorithms find them with ql::Network::quantizable_layers().
//
//   auto fc = register_module("fc1", std::make_shared<ql::nn::Linear>(ql::nn::LinearOptions(784, 256)));
//   auto act = register_module("act1", std::make_shared<ql::nn::Activation>("relu"));
//   fc->set_weight_quantizer(my_quantizer);
#pragma once

#include "quantlab/sdk/quantizer.hpp"

#include <torch/nn/module.h>

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace ql::nn {

/// What a quantisable layer computes.
enum class LayerKind { linear, conv2d, activation };
/// "linear", "conv2d" or "activation", as options and listings spell it.
std::string_view to_string(LayerKind kind);

/// A layer with a weight quantiser slot and an output quantiser slot.
class QuantizableLayer : public torch::nn::Module {
 public:
  explicit QuantizableLayer(LayerKind kind);
  ~QuantizableLayer() override;

  LayerKind kind() const { return kind_; }
  /// True when the layer has a weight tensor (activations have none).
  bool has_weight() const { return weight.defined(); }

  void set_weight_quantizer(std::shared_ptr<Quantizer> quantizer);
  void set_output_quantizer(std::shared_ptr<Quantizer> quantizer);
  const std::shared_ptr<Quantizer>& weight_quantizer() const { return weight_quantizer_; }
  const std::shared_ptr<Quantizer>& output_quantizer() const { return output_quantizer_; }

  /// The weight as the forward pass uses it: through the weight quantiser if one is set.
  at::Tensor effective_weight() const;

  /// Called with the layer's input at every forward pass while set (post-training algorithms
  /// collect the data entering a layer this way); an empty function removes it.
  using InputObserver = std::function<void(const at::Tensor& input)>;
  void set_input_observer(InputObserver observer);

  /// While `*skip` is true, forward() returns zeros of its output's shape without computing:
  /// Network::layer_input sets one flag on every layer and raises it once it has the input it
  /// wants, so the rest of that forward pass costs next to nothing. nullptr: always compute.
  void set_skip_flag(std::shared_ptr<const bool> skip);

  /// The float ("latent") parameters the optimiser updates; `bias` may be undefined.
  at::Tensor weight;
  at::Tensor bias;

 protected:
  /// `y` through the output quantiser if one is set.
  at::Tensor quantize_output(at::Tensor y) const;
  /// Hands `input` to the input observer if one is set.
  void observe_input(const at::Tensor& input) const;
  /// True while the skip flag is raised.
  bool skipping() const { return skip_ && *skip_; }

 private:
  LayerKind kind_;
  std::shared_ptr<Quantizer> weight_quantizer_;
  std::shared_ptr<Quantizer> output_quantizer_;
  InputObserver input_observer_;
  std::shared_ptr<const bool> skip_;
};

struct LinearOptions {
  LinearOptions(std::int64_t in_features, std::int64_t out_features)
      : in_features(in_features), out_features(out_features) {}
  std::int64_t in_features;
  std::int64_t out_features;
  bool bias = true;
};

/// y = x Wᵀ + b, with W of shape [out_features, in_features] (LibTorch's layout and init).
class Linear : public QuantizableLayer {
 public:
  explicit Linear(const LinearOptions& options);
  ~Linear() override;
  at::Tensor forward(const at::Tensor& input);
  const LinearOptions& options() const { return options_; }

 private:
  LinearOptions options_;
};

struct Conv2dOptions {
  Conv2dOptions(std::int64_t in_channels, std::int64_t out_channels, std::int64_t kernel_size)
      : in_channels(in_channels), out_channels(out_channels),
        kernel_size{kernel_size, kernel_size} {}
  std::int64_t in_channels;
  std::int64_t out_channels;
  std::array<std::int64_t, 2> kernel_size;
  std::array<std::int64_t, 2> stride{1, 1};
  std::array<std::int64_t, 2> padding{0, 0};
  std::array<std::int64_t, 2> dilation{1, 1};
  std::int64_t groups = 1;
  bool bias = true;
};

/// 2-D convolution with weight [out, in/groups, kh, kw] (LibTorch's layout and init).
class Conv2d : public QuantizableLayer {
 public:
  explicit Conv2d(const Conv2dOptions& options);
  ~Conv2d() override;
  at::Tensor forward(const at::Tensor& input);
  const Conv2dOptions& options() const { return options_; }

 private:
  Conv2dOptions options_;
};

/// An element-wise non-linearity with an output quantiser slot. Functions: identity, relu,
/// relu6, leaky_relu, tanh, sigmoid, gelu, hardtanh.
class Activation : public QuantizableLayer {
 public:
  explicit Activation(std::string function);
  ~Activation() override;
  at::Tensor forward(const at::Tensor& input);
  const std::string& function() const { return function_; }

 private:
  std::string function_;
  int code_;
};

}  // namespace ql::nn
