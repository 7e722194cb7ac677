#include "quantlab/sdk/onnx_graph.hpp"

#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/nn.hpp"

#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/modules/pooling.h>
#include <torch/types.h>

#include <fmt/format.h>

#include <algorithm>

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

// `y` through the layer's output quantiser, when it has one.
std::string quantized_output(Graph& graph, const nn::QuantizableLayer& layer, const std::string& y,
                             std::string_view name) {
  const std::shared_ptr<Quantizer>& quantizer = layer.output_quantizer();
  if (!quantizer) return y;
  const std::optional<AffineGrid> grid = quantizer->affine_grid();
  QL_CHECK(grid.has_value(), "layer '{}': its output quantiser ({}) has no affine grid, which ONNX export needs",
           name, quantizer->describe());
  return quantize(graph, *grid, y, fmt::format("{}.quantized", name));
}

// The ONNX integer type that holds codes in [low, high] of an activation grid, with its bounds.
struct ActivationContainer {
  at::ScalarType type;
  std::int64_t onnx_type;  ///< TensorProto.DataType, for Cast
  std::int64_t low, high;
};

ActivationContainer activation_container(std::int64_t low, std::int64_t high, int opset, std::string_view name) {
  // Unsigned grids in uint8 first: onnxruntime's x86 rewrites turn int8 activations into uint8
  // before its integer kernels anyway (and in opset 21, propagating such a pair through a
  // Reshape, write a QuantizeLinear whose output_dtype contradicts its zero point).
  if (low >= 0 && high <= 255) return {torch::kUInt8, 2, 0, 255};
  if (low >= -128 && high <= 127) return {torch::kInt8, 3, -128, 127};
  if (opset >= 21 && low >= -32768 && high <= 32767) return {torch::kInt16, 5, -32768, 32767};
  throw Error(fmt::format("'{}': activation codes in [{}, {}] do not fit the containers of opset {} ({})", name, low,
                          high, opset, opset >= 21 ? "int8, uint8, int16" : "int8, uint8; opset 21 adds int16"));
}

}  // namespace

std::string quantize(Graph& graph, const AffineGrid& grid, const std::string& input, std::string_view name) {
  const ActivationContainer container = activation_container(grid.low, grid.high, graph.opset(), name);
  const auto constant = [&](std::string_view what, const at::Tensor& value) {
    return graph.constant(fmt::format("{}.{}", name, what), value);
  };
  std::string x = input;
  if (grid.offset != 0.0f) x = graph.add("Sub", {x, constant("offset", torch::tensor(grid.offset))}, fmt::format("{}.shifted", name));
  std::string scale = constant("scale", torch::tensor(grid.scale));
  std::string zero_point;
  std::vector<Attribute> axis;
  if (grid.range == AffineGrid::Range::max_abs) {
    // s = scale · max|x|, over each sample or the whole tensor, and 1 where that is 0.
    std::string magnitude = graph.add("Abs", {x}, fmt::format("{}.abs", name));
    std::vector<std::string> reduce_inputs{magnitude};
    std::vector<Attribute> reduce_attributes{{"keepdims", std::int64_t{0}}};
    if (grid.per_sample) {
      reduce_inputs[0] = graph.add("Flatten", {magnitude}, fmt::format("{}.abs_flat", name), {{"axis", std::int64_t{1}}});
      // ReduceMax takes its axes as an attribute up to opset 17 and as an input from 18.
      if (graph.opset() >= 18) reduce_inputs.push_back(constant("axes", torch::tensor({std::int64_t{1}})));
      else reduce_attributes.push_back({"axes", std::vector<std::int64_t>{1}});
      axis.push_back({"axis", std::int64_t{0}});
    }
    const std::string largest = graph.add("ReduceMax", reduce_inputs, fmt::format("{}.max", name), reduce_attributes);
    const std::string scaled = graph.add("Mul", {largest, scale}, fmt::format("{}.scale_of_max", name));
    const std::string positive = graph.add("Greater", {scaled, constant("zero", torch::tensor(0.0f))},
                                           fmt::format("{}.positive", name));
    scale = graph.add("Where", {positive, scaled, constant("one", torch::tensor(1.0f))}, fmt::format("{}.scale_used", name));
    if (grid.per_sample) {
      QL_CHECK(grid.zero_point == 0, "'{}': a per-sample grid has zero point 0, not {}", name, grid.zero_point);
      const std::string zeros = graph.add("Mul", {scale, constant("zero_f", torch::tensor(0.0f))}, fmt::format("{}.zeros", name));
      zero_point = graph.add("Cast", {zeros}, fmt::format("{}.zero_points", name), {{"to", container.onnx_type}});
    }
  }
  if (zero_point.empty()) zero_point = constant("zero_point", torch::tensor(grid.zero_point).to(container.type));
  std::string codes = graph.add("QuantizeLinear", {x, scale, zero_point}, fmt::format("{}.codes", name), axis);
  if (grid.low > container.low || grid.high < container.high) {
    // onnxruntime's Clip has no int16 kernel: int16 codes are clipped in int32.
    const bool wide = container.type == torch::kInt16;
    const at::ScalarType clip_type = wide ? torch::kInt32 : container.type;
    if (wide) codes = graph.add("Cast", {codes}, fmt::format("{}.codes_int32", name), {{"to", std::int64_t{6}}});
    codes = graph.add("Clip", {codes, constant("low", torch::tensor(grid.low).to(clip_type)),
                               constant("high", torch::tensor(grid.high).to(clip_type))},
                      fmt::format("{}.clipped", name));
    if (wide) codes = graph.add("Cast", {codes}, fmt::format("{}.clipped_int16", name), {{"to", container.onnx_type}});
  }
  return graph.add("DequantizeLinear", {codes, scale, zero_point}, std::string(name), axis);
}

std::string linear(Graph& graph, const nn::Linear& layer, const std::string& input, std::string_view name) {
  torch::NoGradGuard no_grad;
  std::vector<std::string> inputs{input, weight_of(graph, layer, name)};
  if (layer.bias.defined()) inputs.push_back(graph.constant(fmt::format("{}.bias", name), layer.bias));
  return quantized_output(graph, layer, graph.add("Gemm", std::move(inputs), name, {{"transB", std::int64_t{1}}}),
                          name);
}

std::string conv2d(Graph& graph, const nn::Conv2d& layer, const std::string& input, std::string_view name) {
  torch::NoGradGuard no_grad;
  const nn::Conv2dOptions& o = layer.options();
  std::vector<std::string> inputs{input, weight_of(graph, layer, name)};
  if (layer.bias.defined()) inputs.push_back(graph.constant(fmt::format("{}.bias", name), layer.bias));
  const std::string y =
      graph.add("Conv", std::move(inputs), name,
                {{"kernel_shape", pair_of(o.kernel_size)},
                 {"strides", pair_of(o.stride)},
                 {"pads", std::vector<std::int64_t>{o.padding[0], o.padding[1], o.padding[0], o.padding[1]}},
                 {"dilations", pair_of(o.dilation)},
                 {"group", o.groups}});
  return quantized_output(graph, layer, y, name);
}

namespace {

// The activation's function f as nodes.
std::string activation_function(Graph& graph, const std::string& f, const std::string& input, std::string_view name) {
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

}  // namespace

std::string activation(Graph& graph, const nn::Activation& layer, const std::string& input, std::string_view name) {
  return quantized_output(graph, layer, activation_function(graph, layer.function(), input, name), name);
}

namespace {

// The index of the node whose output is `name`, or -1.
std::ptrdiff_t producer_of(const std::vector<Node>& nodes, const std::string& name) {
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    if (nodes[i].outputs.front() == name) return static_cast<std::ptrdiff_t>(i);
  }
  return -1;
}

std::size_t consumers_of(const std::vector<Node>& nodes, const std::string& name) {
  std::size_t count = 0;
  for (const Node& node : nodes) count += static_cast<std::size_t>(std::count(node.inputs.begin(), node.inputs.end(), name));
  return count;
}

Constant* constant_named(std::vector<Constant>& constants, const std::string& name) {
  for (Constant& c : constants) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

const Attribute* attribute_of(const Node& node, std::string_view name) {
  for (const Attribute& attribute : node.attributes) {
    if (attribute.name == name) return &attribute;
  }
  return nullptr;
}

}  // namespace

void fold_batch_norms(Graph& graph) {
  std::vector<Node>& nodes = graph.nodes_;
  const auto constant = [&](const std::string& name) { return constant_named(graph.constants_, name); };
  for (std::size_t i = 0; i < nodes.size();) {
    if (nodes[i].op_type != "BatchNormalization") {
      ++i;
      continue;
    }
    const Node bn = nodes[i];
    const std::ptrdiff_t p = producer_of(nodes, bn.inputs[0]);
    Node* layer = p >= 0 ? &nodes[static_cast<std::size_t>(p)] : nullptr;
    const Attribute* transposed = layer ? attribute_of(*layer, "transB") : nullptr;
    QL_CHECK(layer != nullptr && (layer->op_type == "Conv" ||
                                  (layer->op_type == "Gemm" && transposed && std::get<std::int64_t>(transposed->value) == 1)),
             "batch norm '{}' cannot be folded: its input is not a Conv or Gemm (it is {})", bn.outputs.front(),
             layer ? layer->op_type : "the graph's input");
    QL_CHECK(consumers_of(nodes, bn.inputs[0]) == 1,
             "batch norm '{}' cannot be folded: the output of '{}' feeds other nodes too", bn.outputs.front(),
             layer->outputs.front());
    const Attribute* eps = attribute_of(bn, "epsilon");
    const at::Tensor gamma = constant(bn.inputs[1])->value.to(torch::kFloat64);
    const at::Tensor a = gamma / (constant(bn.inputs[4])->value.to(torch::kFloat64) +
                                  (eps ? std::get<float>(eps->value) : 1e-5f))
                                     .sqrt();
    const at::Tensor shift = constant(bn.inputs[2])->value.to(torch::kFloat64) -
                             a * constant(bn.inputs[3])->value.to(torch::kFloat64);
    std::vector<std::int64_t> column(2, 1);  // a as [C, 1] for Gemm's [out, in], [C, 1, 1, 1] for Conv's weights
    if (layer->op_type == "Conv") column.assign(4, 1);
    column[0] = -1;
    if (Constant* weight = constant(layer->inputs[1])) {
      weight->value = (weight->value.to(torch::kFloat64) * a.view(column)).to(torch::kFloat32);
    } else {
      const std::ptrdiff_t d = producer_of(nodes, layer->inputs[1]);
      QL_CHECK(d >= 0 && nodes[static_cast<std::size_t>(d)].op_type == "DequantizeLinear",
               "batch norm '{}' cannot be folded: the weights of '{}' are neither a constant nor integer codes",
               bn.outputs.front(), layer->outputs.front());
      Node& dequantize = nodes[static_cast<std::size_t>(d)];
      const Attribute* axis = attribute_of(dequantize, "axis");
      Constant* scale = constant(dequantize.inputs[1]);
      Constant* zero_point = constant(dequantize.inputs[2]);
      QL_CHECK(scale->value.dim() == 0 || (axis != nullptr && std::get<std::int64_t>(axis->value) == 0),
               "batch norm '{}' cannot be folded: the codes of '{}' have their scales along axis {}",
               bn.outputs.front(), layer->outputs.front(), axis ? std::get<std::int64_t>(axis->value) : -1);
      QL_CHECK((a > 0).all().item<bool>(),
               "batch norm '{}' cannot be folded into the integer codes of '{}': a channel's scale γ/√(σ² + ε) "
               "is not positive",
               bn.outputs.front(), layer->outputs.front());
      const std::int64_t channels = a.numel();
      scale->value = (scale->value.to(torch::kFloat64) * a).to(torch::kFloat32);
      zero_point->value = zero_point->value.expand({channels}).contiguous();
      if (axis == nullptr) dequantize.attributes.push_back({"axis", std::int64_t{0}});
    }
    if (layer->inputs.size() >= 3) {
      Constant* bias = constant(layer->inputs[2]);
      bias->value = (a * bias->value.to(torch::kFloat64) + shift).to(torch::kFloat32);
    } else {
      // graph.constant appends to constants_, which no pointer above outlives.
      layer->inputs.push_back(graph.constant(layer->outputs.front() + ".bias", shift.to(torch::kFloat32)));
    }
    // The layer now writes what the batch norm wrote, under its name.
    layer->outputs.front() = bn.outputs.front();
    nodes.erase(nodes.begin() + static_cast<std::ptrdiff_t>(i));
  }
  // The batch norms' statistics are no node's input any more.
  std::set<std::string> used;
  for (const Node& node : nodes) used.insert(node.inputs.begin(), node.inputs.end());
  graph.constants_.erase(std::remove_if(graph.constants_.begin(), graph.constants_.end(),
                                        [&](const Constant& c) { return used.count(c.name) == 0; }),
                         graph.constants_.end());
}

std::string layer_norm(Graph& graph, const at::Tensor& weight, const at::Tensor& bias, double eps,
                       const std::string& input, std::string_view name) {
  torch::NoGradGuard no_grad;
  const auto constant = [&](std::string_view what, const at::Tensor& value) {
    return graph.constant(fmt::format("{}.{}", name, what), value);
  };
  const std::string scale = constant("weight", weight), shift = constant("bias", bias);
  if (graph.opset() >= 17) {
    return graph.add("LayerNormalization", {input, scale, shift}, name,
                     {{"axis", std::int64_t{-1}}, {"epsilon", static_cast<float>(eps)}});
  }
  const auto mean_of = [&](const std::string& x, std::string_view what) {
    return graph.add("ReduceMean", {x}, fmt::format("{}.{}", name, what),
                     {{"axes", std::vector<std::int64_t>{-1}}, {"keepdims", std::int64_t{1}}});
  };
  const std::string centred = graph.add("Sub", {input, mean_of(input, "mean")}, fmt::format("{}.centred", name));
  const std::string squares = graph.add("Mul", {centred, centred}, fmt::format("{}.squares", name));
  const std::string variance = graph.add("Add", {mean_of(squares, "variance"), constant("eps", torch::tensor(static_cast<float>(eps)))},
                                         fmt::format("{}.variance_eps", name));
  const std::string normalised = graph.add("Div", {centred, graph.add("Sqrt", {variance}, fmt::format("{}.std", name))},
                                           fmt::format("{}.normalised", name));
  return graph.add("Add", {graph.add("Mul", {normalised, scale}, fmt::format("{}.scaled", name)), shift}, name);
}

void split_integer_layer_biases(Graph& graph) {
  std::vector<Node>& nodes = graph.nodes_;
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    if ((nodes[i].op_type != "Conv" && nodes[i].op_type != "Gemm") || nodes[i].inputs.size() < 3) continue;
    const std::ptrdiff_t weight = producer_of(nodes, nodes[i].inputs[1]);
    if (weight < 0 || nodes[static_cast<std::size_t>(weight)].op_type != "DequantizeLinear") continue;
    const std::string bias = nodes[i].inputs[2];
    nodes[i].inputs.pop_back();
    const std::string output = nodes[i].outputs.front();
    nodes[i].outputs.front() = graph.unique_name(output + ".without_bias");
    if (nodes[i].op_type == "Conv") {
      // [C] to [C, 1, 1], to broadcast over the feature maps.
      Constant* values = constant_named(graph.constants_, bias);
      values->value = values->value.view({-1, 1, 1}).contiguous();
    }
    nodes.insert(nodes.begin() + static_cast<std::ptrdiff_t>(i) + 1,
                 Node{"Add", {nodes[i].outputs.front(), bias}, {output}, {}});
  }
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
  if (auto* norm = dynamic_cast<torch::nn::LayerNormImpl*>(&m)) {
    QL_CHECK(norm->options.normalized_shape().size() == 1 && norm->options.elementwise_affine(),
             "module '{}': only LayerNorm over the last dimension with weights has an ONNX form here", name);
    return layer_norm(graph, norm->weight, norm->bias, norm->options.eps(), input, name);
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
