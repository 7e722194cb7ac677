// Topologies build networks. A ql::Network is a torch::nn::Module with a virtual forward and
// an input quantiser slot; it is made of the SDK's quantisable layers wherever a layer may be
// quantised, so every algorithm can act on every network.
//
//   class Mlp : public ql::Topology {
//     std::shared_ptr<ql::Network> build(const ql::DatasetSpec& spec) override;
//   };
#pragma once

#include "quantlab/sdk/nn.hpp"
#include "quantlab/sdk/onnx_graph.hpp"
#include "quantlab/sdk/plugin.hpp"
#include "quantlab/sdk/problem.hpp"

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ql {

class Network : public torch::nn::Module {
 public:
  ~Network() override;
  /// The network's computation on a batch of inputs.
  virtual at::Tensor forward(const at::Tensor& input) = 0;
  /// What the host calls: `forward` after the input quantiser slot, if one is set.
  at::Tensor apply(const at::Tensor& input);
  /// The network in inference mode as ONNX nodes (docs/export.md): from `input`, what
  /// forward() receives, to the logits, whose name it returns. A topology opts in by
  /// overriding it; the default throws ql::Error.
  virtual std::string export_onnx(onnx::Graph& graph, const std::string& input);

  void set_input_quantizer(std::shared_ptr<Quantizer> quantizer);
  const std::shared_ptr<Quantizer>& input_quantizer() const { return input_quantizer_; }

  using NamedLayers = std::vector<std::pair<std::string, std::shared_ptr<nn::QuantizableLayer>>>;
  /// Every quantisable layer with its dotted name, in registration (= network) order.
  NamedLayers quantizable_layers();
  /// The quantisable layers whose names match one of `include` and none of `exclude`
  /// (shell-style patterns: "fc*", "features.*", "*"), in network order.
  NamedLayers select_layers(const std::vector<std::string>& include, const std::vector<std::string>& exclude = {});

  /// What `layer` receives when the network runs on `inputs`: one forward pass without
  /// autograd, with the quantiser slots as they are set (it replaces the layer's input
  /// observer for the pass). Throws ql::Error when the pass never reaches the layer.
  at::Tensor layer_input(nn::QuantizableLayer& layer, const at::Tensor& inputs);

 private:
  std::shared_ptr<Quantizer> input_quantizer_;
};

/// True when `name` matches one of the shell-style `patterns` (fnmatch without flags).
bool matches_any(std::string_view name, const std::vector<std::string>& patterns);

class Topology {
 public:
  using Interface = Topology;
  static constexpr PluginKind kKind = PluginKind::topology;
  virtual ~Topology();
  /// A freshly initialised network for `spec`; throws ql::ConfigError when the topology
  /// cannot serve the spec (wrong input rank, too small images, ...).
  virtual std::shared_ptr<Network> build(const DatasetSpec& spec) = 0;
};

}  // namespace ql
