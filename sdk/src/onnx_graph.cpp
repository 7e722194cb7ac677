#include "quantlab/sdk/onnx_graph.hpp"

#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/nn.hpp"

#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/types.h>

#include <fmt/format.h>

namespace ql::onnx {

Graph::Graph(int opset, std::vector<std::int64_t> input_shape) : opset_(opset), input_shape_(std::move(input_shape)) {
  QL_CHECK(opset == 13 || opset == 21, "ONNX opset {} is not supported (13 or 21)", opset);
}

at::Tensor Graph::example_input() const {
  std::vector<std::int64_t> shape{1};
  shape.insert(shape.end(), input_shape_.begin(), input_shape_.end());
  return torch::zeros(shape);
}

std::string Graph::unique_name(std::string_view hint) {
  const std::string base(hint.empty() ? "t" : hint);
  std::string name = base;
  for (int k = 1; names_.count(name) > 0; ++k) name = fmt::format("{}_{}", base, k);
  names_.insert(name);
  return name;
}

std::string Graph::constant(std::string_view hint, const at::Tensor& value, Storage storage) {
  std::string name = unique_name(hint);
  constants_.push_back({name, value.detach().to(torch::kCPU).contiguous().clone(), storage});
  return name;
}

std::string Graph::add(std::string op_type, std::vector<std::string> inputs, std::string_view hint,
                       std::vector<Attribute> attributes) {
  std::string output = unique_name(hint);
  nodes_.push_back({std::move(op_type), std::move(inputs), {output}, std::move(attributes)});
  return output;
}

namespace {

void refuse_quantized_output(const nn::QuantizableLayer& layer, std::string_view name) {
  if (layer.output_quantizer()) {
    throw Error(fmt::format("layer '{}' has an output quantiser ({}), which ONNX export does not support yet", name,
                            layer.output_quantizer()->describe()));
  }
}

std::vector<std::int64_t> pair_of(const std::array<std::int64_t, 2>& values) { return {values[0], values[1]}; }

// The smallest ONNX integer type of the opset that holds [low, high]: int8 or uint8 in opset
// 13, int4 or uint4 first in 21.
std::pair<at::ScalarType, Storage> container_for(std::int64_t low, std::int64_t high, int opset,
                                                 std::string_view name) {
  if (opset >= 21 && low >= -8 && high <= 7) return {torch::kInt8, Storage::int4};
  if (opset >= 21 && low >= 0 && high <= 15) return {torch::kUInt8, Storage::uint4};
  if (low >= -128 && high <= 127) return {torch::kInt8, Storage::natural};
  if (low >= 0 && high <= 255) return {torch::kUInt8, Storage::natural};
  throw Error(fmt::format("layer '{}': codes in [{}, {}] do not fit the 8-bit containers of opset {}", name, low,
                          high, opset));
}

// The weight as the forward pass uses it: integer codes and DequantizeLinear when its
// quantiser has an integer form, else the effective weight in float.
std::string weight_of(Graph& graph, const nn::QuantizableLayer& layer, std::string_view name) {
  const std::string weight = fmt::format("{}.weight", name);
  const std::optional<IntegerForm> form =
      layer.weight_quantizer() ? layer.weight_quantizer()->integer_form(layer.weight.detach()) : std::nullopt;
  if (!form) return graph.constant(weight, layer.effective_weight());
  const at::Tensor codes = form->codes.to(torch::kCPU, torch::kInt64);
  const at::Tensor zero_point = form->zero_point.to(torch::kCPU, torch::kInt64).flatten();
  const std::int64_t low = std::min(codes.min().item<std::int64_t>(), zero_point.min().item<std::int64_t>());
  const std::int64_t high = std::max(codes.max().item<std::int64_t>(), zero_point.max().item<std::int64_t>());
  const auto [type, storage] = container_for(low, high, graph.opset(), name);
  std::vector<std::string> inputs{
      graph.constant(weight + "_codes", codes.to(type), storage),
      graph.constant(weight + "_scale", form->scale.to(torch::kCPU, torch::kFloat32).flatten().squeeze()),
      graph.constant(weight + "_zero_point", zero_point.to(type).squeeze(), storage)};
  std::vector<Attribute> attributes;
  if (form->axis >= 0) attributes.push_back({"axis", form->axis});
  return graph.add("DequantizeLinear", std::move(inputs), weight, std::move(attributes));
}

}  // namespace

std::string linear(Graph& graph, const nn::Linear& layer, const std::string& input, std::string_view name) {
  refuse_quantized_output(layer, name);
  torch::NoGradGuard no_grad;
  std::vector<std::string> inputs{input, weight_of(graph, layer, name)};
  if (layer.bias.defined()) inputs.push_back(graph.constant(fmt::format("{}.bias", name), layer.bias));
  return graph.add("Gemm", std::move(inputs), name, {{"transB", std::int64_t{1}}});
}

std::string conv2d(Graph& graph, const nn::Conv2d& layer, const std::string& input, std::string_view name) {
  refuse_quantized_output(layer, name);
  torch::NoGradGuard no_grad;
  const nn::Conv2dOptions& o = layer.options();
  std::vector<std::string> inputs{input, weight_of(graph, layer, name)};
  if (layer.bias.defined()) inputs.push_back(graph.constant(fmt::format("{}.bias", name), layer.bias));
  return graph.add("Conv", std::move(inputs), name,
                   {{"kernel_shape", pair_of(o.kernel_size)},
                    {"strides", pair_of(o.stride)},
                    {"pads", std::vector<std::int64_t>{o.padding[0], o.padding[1], o.padding[0], o.padding[1]}},
                    {"dilations", pair_of(o.dilation)},
                    {"group", o.groups}});
}

std::string activation(Graph& graph, const nn::Activation& layer, const std::string& input, std::string_view name) {
  refuse_quantized_output(layer, name);
  const std::string& f = layer.function();
  const auto clip = [&](float low, float high) {
    return graph.add("Clip", {input, graph.constant(fmt::format("{}.min", name), torch::tensor(low)),
                              graph.constant(fmt::format("{}.max", name), torch::tensor(high))},
                     name);
  };
  if (f == "identity") return graph.add("Identity", {input}, name);
  if (f == "relu") return graph.add("Relu", {input}, name);
  if (f == "relu6") return clip(0.0f, 6.0f);
  if (f == "hardtanh") return clip(-1.0f, 1.0f);
  if (f == "leaky_relu") return graph.add("LeakyRelu", {input}, name, {{"alpha", 0.01f}});
  if (f == "tanh") return graph.add("Tanh", {input}, name);
  if (f == "sigmoid") return graph.add("Sigmoid", {input}, name);
  if (f == "gelu") {
    // LibTorch's exact GELU, x · (1 + erf(x / √2)) / 2 (opset 20's Gelu is not in 13).
    const std::string scaled = graph.add("Div", {input, graph.constant(fmt::format("{}.sqrt2", name),
                                                                       torch::tensor(static_cast<float>(M_SQRT2)))},
                                         fmt::format("{}.scaled", name));
    const std::string erf = graph.add("Erf", {scaled}, fmt::format("{}.erf", name));
    const std::string one_plus = graph.add(
        "Add", {erf, graph.constant(fmt::format("{}.one", name), torch::tensor(1.0f))}, fmt::format("{}.one_plus", name));
    const std::string half = graph.add("Mul", {input, graph.constant(fmt::format("{}.half", name), torch::tensor(0.5f))},
                                       fmt::format("{}.half_x", name));
    return graph.add("Mul", {half, one_plus}, name);
  }
  throw Error(fmt::format("layer '{}': activation '{}' has no ONNX form", name, f));
}

std::string batch_norm(Graph& graph, const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& running_mean,
                       const at::Tensor& running_var, double eps, const std::string& input, std::string_view name) {
  QL_CHECK(running_mean.defined() && running_var.defined(),
           "batch norm '{}' keeps no running statistics; ONNX export needs them", name);
  torch::NoGradGuard no_grad;
  const std::int64_t channels = running_mean.numel();
  const at::Tensor scale = weight.defined() ? weight : torch::ones({channels});
  const at::Tensor shift = bias.defined() ? bias : torch::zeros({channels});
  return graph.add("BatchNormalization",
                   {input, graph.constant(fmt::format("{}.weight", name), scale),
                    graph.constant(fmt::format("{}.bias", name), shift),
                    graph.constant(fmt::format("{}.running_mean", name), running_mean),
                    graph.constant(fmt::format("{}.running_var", name), running_var)},
                   name, {{"epsilon", static_cast<float>(eps)}});
}

namespace {

template <typename Options>
std::vector<Attribute> pooling_attributes(const Options& o) {
  const auto& kernel = *o.kernel_size();
  const auto& stride = *o.stride();
  const auto& padding = *o.padding();
  return {{"kernel_shape", std::vector<std::int64_t>{kernel[0], kernel[1]}},
          {"strides", std::vector<std::int64_t>{stride[0], stride[1]}},
          {"pads", std::vector<std::int64_t>{padding[0], padding[1], padding[0], padding[1]}},
          {"ceil_mode", std::int64_t{o.ceil_mode() ? 1 : 0}}};
}

}  // namespace

std::string module(Graph& graph, torch::nn::Module& m, const std::string& input, std::string_view name) {
  if (auto* layer = dynamic_cast<nn::Linear*>(&m)) return linear(graph, *layer, input, name);
  if (auto* layer = dynamic_cast<nn::Conv2d*>(&m)) return conv2d(graph, *layer, input, name);
  if (auto* layer = dynamic_cast<nn::Activation*>(&m)) return activation(graph, *layer, input, name);
  if (auto* sequence = dynamic_cast<torch::nn::SequentialImpl*>(&m)) {
    std::string x = input;
    for (const auto& child : sequence->named_children()) {
      x = module(graph, *child.value(), x, fmt::format("{}.{}", name, child.key()));
    }
    return x;
  }
  if (auto* bn = dynamic_cast<torch::nn::BatchNorm1dImpl*>(&m)) {
    return batch_norm(graph, bn->weight, bn->bias, bn->running_mean, bn->running_var, bn->options.eps(), input, name);
  }
  if (auto* bn = dynamic_cast<torch::nn::BatchNorm2dImpl*>(&m)) {
    return batch_norm(graph, bn->weight, bn->bias, bn->running_mean, bn->running_var, bn->options.eps(), input, name);
  }
  if (auto* pool = dynamic_cast<torch::nn::MaxPool2dImpl*>(&m)) {
    std::vector<Attribute> attributes = pooling_attributes(pool->options);
    const auto& dilation = *pool->options.dilation();
    attributes.push_back({"dilations", std::vector<std::int64_t>{dilation[0], dilation[1]}});
    return graph.add("MaxPool", {input}, name, std::move(attributes));
  }
  if (auto* pool = dynamic_cast<torch::nn::AvgPool2dImpl*>(&m)) {
    QL_CHECK(!pool->options.divisor_override(), "module '{}': AvgPool2d with a divisor override has no ONNX form",
             name);
    std::vector<Attribute> attributes = pooling_attributes(pool->options);
    attributes.push_back({"count_include_pad", std::int64_t{pool->options.count_include_pad() ? 1 : 0}});
    return graph.add("AveragePool", {input}, name, std::move(attributes));
  }
  if (auto* pool = dynamic_cast<torch::nn::AdaptiveAvgPool2dImpl*>(&m)) {
    const auto& size = pool->options.output_size();
    QL_CHECK(size->at(0) == 1 && size->at(1) == 1,
             "module '{}': AdaptiveAvgPool2d to {}x{} needs the size of its input (use adaptive_average_pool)",
             name, size->at(0).value_or(0), size->at(1).value_or(0));
    return graph.add("GlobalAveragePool", {input}, name);
  }
  if (auto* flatten = dynamic_cast<torch::nn::FlattenImpl*>(&m)) {
    QL_CHECK(flatten->options.start_dim() == 1 && flatten->options.end_dim() == -1,
             "module '{}': only Flatten from dimension 1 has an ONNX form here", name);
    return graph.add("Flatten", {input}, name, {{"axis", std::int64_t{1}}});
  }
  if (dynamic_cast<torch::nn::ReLUImpl*>(&m) != nullptr) return graph.add("Relu", {input}, name);
  if (dynamic_cast<torch::nn::DropoutImpl*>(&m) != nullptr || dynamic_cast<torch::nn::Dropout2dImpl*>(&m) != nullptr) {
    return input;  // inference: the identity
  }
  throw Error(fmt::format("module '{}' ({}) has no ONNX export", name, m.name()));
}

std::string adaptive_average_pool(Graph& graph, torch::nn::AdaptiveAvgPool2dImpl& pool, std::int64_t height,
                                  std::int64_t width, const std::string& input, std::string_view name) {
  const auto& size = pool.options.output_size();
  const std::int64_t out_height = size->at(0).value_or(height), out_width = size->at(1).value_or(width);
  if (out_height == height && out_width == width) return graph.add("Identity", {input}, name);
  if (out_height == 1 && out_width == 1) return graph.add("GlobalAveragePool", {input}, name);
  if (height == 1 && width == 1) {
    return graph.add("Expand", {input, graph.constant(fmt::format("{}.shape", name),
                                                      torch::tensor({std::int64_t{1}, std::int64_t{1}, out_height,
                                                                     out_width}))},
                     name);
  }
  QL_CHECK(height % out_height == 0 && width % out_width == 0,
           "module '{}': adaptive pooling of {}x{} maps to {}x{} has no ONNX form (the sizes must be multiples; "
           "choose an input size that gives them)",
           name, height, width, out_height, out_width);
  const std::vector<std::int64_t> kernel{height / out_height, width / out_width};
  return graph.add("AveragePool", {input}, name,
                   {{"kernel_shape", kernel}, {"strides", kernel}, {"pads", std::vector<std::int64_t>{0, 0, 0, 0}}});
}

}  // namespace ql::onnx
