// The graph a network exports to ONNX (docs/export.md): nodes in execution order and constant
// tensors, in plain C++ (the host writes the protobuf). A topology's network overrides
// ql::Network::export_onnx and wires its layers with the emitters below, in inference mode.
//
//   std::string export_onnx(ql::onnx::Graph& graph, const std::string& input) override {
//     std::string x = graph.add("Flatten", {input}, "flat", {{"axis", std::int64_t{1}}});
//     x = ql::onnx::linear(graph, *fc1_, x, "fc1");
//     return ql::onnx::activation(graph, *act1_, x, "act1");
//   }
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace torch::nn {
class Module;
class AdaptiveAvgPool2dImpl;
}  // namespace torch::nn

namespace ql::nn {
class Linear;
class Conv2d;
class Activation;
}  // namespace ql::nn

namespace ql {
struct AffineGrid;
}

namespace ql::onnx {

/// A node attribute: one integer, float or string, or a list of integers or floats.
struct Attribute {
  std::string name;
  std::variant<std::int64_t, float, std::string, std::vector<std::int64_t>, std::vector<float>> value;
};

/// How a constant is stored: as its ATen dtype, or (integer codes) as 4-bit ONNX integers.
enum class Storage { natural, int4, uint4 };

struct Constant {
  std::string name;
  at::Tensor value;  ///< contiguous, on the CPU
  Storage storage = Storage::natural;
};

struct Node {
  std::string op_type;
  std::vector<std::string> inputs;
  std::vector<std::string> outputs;
  std::vector<Attribute> attributes;
};

class Graph {
 public:
  /// A graph for the default ONNX operator set `opset` (13 or 21) whose input samples have
  /// the shape `input_shape` (the problem's, without the batch dimension).
  Graph(int opset, std::vector<std::int64_t> input_shape);

  int opset() const { return opset_; }
  const std::vector<std::int64_t>& input_shape() const { return input_shape_; }
  /// One sample of zeros of the input shape (float), to learn feature-map sizes by running layers.
  at::Tensor example_input() const;
  /// A tensor name not used yet: `hint`, else `hint_1`, `hint_2`, ...
  std::string unique_name(std::string_view hint);
  /// Adds a constant (a contiguous CPU copy of `value`); returns its name.
  std::string constant(std::string_view hint, const at::Tensor& value, Storage storage = Storage::natural);
  /// Appends a node with one output, named after `hint`; returns the output's name.
  std::string add(std::string op_type, std::vector<std::string> inputs, std::string_view hint,
                  std::vector<Attribute> attributes = {});

  const std::vector<Node>& nodes() const { return nodes_; }
  const std::vector<Constant>& constants() const { return constants_; }

 private:
  friend void fold_batch_norms(Graph& graph);
  friend void split_integer_layer_biases(Graph& graph);

  int opset_;
  std::vector<std::int64_t> input_shape_;
  std::set<std::string, std::less<>> names_;
  std::vector<Node> nodes_;
  std::vector<Constant> constants_;
};

/// The SDK's layers as ONNX nodes; each returns its output's name. A weight whose quantiser
/// has an integer form becomes integer codes and DequantizeLinear (int8/uint8 containers in
/// opset 13; int4/uint4 where the codes fit, in opset 21); any other weight is its effective
/// value in float. A layer's output quantiser becomes `quantize` of its affine grid; one
/// without a grid is refused with a ql::Error naming the layer, as are codes too wide for the opset.
std::string linear(Graph& graph, const nn::Linear& layer, const std::string& input, std::string_view name);
std::string conv2d(Graph& graph, const nn::Conv2d& layer, const std::string& input, std::string_view name);
std::string activation(Graph& graph, const nn::Activation& layer, const std::string& input, std::string_view name);

/// `grid` (ql::AffineGrid) applied to `input`: QuantizeLinear into int8/uint8 (int16 in opset
/// 21 for wider grids), Clip where the grid's range is narrower than its container, and
/// DequantizeLinear; a max_abs grid computes its scale in the graph (per sample: per axis 0).
/// Grids wider than the opset's containers are refused naming `name`.
std::string quantize(Graph& graph, const AffineGrid& grid, const std::string& input, std::string_view name);

/// Folds every BatchNormalization into the Conv or Gemm that feeds it (and nothing else): with
/// a = γ/√(σ² + ε) per channel, the weights become a·W and the bias a·B + β − a·μ. A float weight is multiplied; integer codes keep their values and take a·s as
/// their per-channel scale (axis 0). Throws ql::Error naming the batch norm where that is
/// impossible: its input comes from another node or feeds others too, its channel scale a is
/// not positive for integer codes, or the codes' scales are along another axis.
void fold_batch_norms(Graph& graph);

/// Moves the bias of every Conv and Gemm whose weights are integer codes (DequantizeLinear)
/// into an Add after it. onnxruntime runs such a layer with a quantised input as an integer
/// kernel (QGemm, QLinearConv) and would round a bias input to the int32 grid of input scale ×
/// weight scale; added after, it stays the float QuantLab adds.
void split_integer_layer_biases(Graph& graph);

/// Layer normalisation over the last dimension (LibTorch's LayerNorm of one normalised
/// dimension): LayerNormalization from opset 17, its decomposition (ReduceMean, Sub, Mul,
/// Sqrt, Div) in 13.
std::string layer_norm(Graph& graph, const at::Tensor& weight, const at::Tensor& bias, double eps,
                       const std::string& input, std::string_view name);

/// Batch normalisation in inference mode (LibTorch's BatchNorm1d/2d with running statistics).
std::string batch_norm(Graph& graph, const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& running_mean,
                       const at::Tensor& running_var, double eps, const std::string& input, std::string_view name);

/// One module in inference mode, by its type: the SDK's layers, LibTorch's BatchNorm1d/2d,
/// MaxPool2d, AvgPool2d, AdaptiveAvgPool2d to 1x1, Flatten, ReLU, Dropout (nothing) and
/// Sequential (its children in order, named `name.0`, `name.1`, ...). Other modules are refused
/// with a ql::Error naming the module and its type.
std::string module(Graph& graph, torch::nn::Module& module, const std::string& input, std::string_view name);

/// LibTorch's AdaptiveAvgPool2d for feature maps of `height` x `width`, which a topology knows
/// from the input shape: Identity when the sizes agree, AveragePool when they are multiples of
/// the output size, Expand from 1x1; other sizes are refused (ONNX has no adaptive pooling).
std::string adaptive_average_pool(Graph& graph, torch::nn::AdaptiveAvgPool2dImpl& pool, std::int64_t height,
                                  std::int64_t width, const std::string& input, std::string_view name);

}  // namespace ql::onnx
