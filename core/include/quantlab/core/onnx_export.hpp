// A network as an ONNX model (docs/export.md): the topology wires its nodes
// (ql::Network::export_onnx), this writes them with the graph's input and output, the weights
// as initialisers and the metadata, as ONNX's protobuf.
//
//   ql::core::write_onnx_model(*network, spec, unit / "result.onnx", {.opset = 13});
#pragma once

#include "quantlab/sdk/problem.hpp"
#include "quantlab/sdk/topology.hpp"

#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace ql::core {

struct OnnxModelOptions {
  int opset = 13;  ///< the default domain's operator set: 13 or 21
  /// Folds each batch norm into the Conv or Gemm before it (ql::onnx::fold_batch_norms).
  bool fold_batch_norm = false;
  /// Extra key-value metadata (where the weights came from, ...).
  std::vector<std::pair<std::string, std::string>> metadata = {};
  /// The problem's encoding of raw samples: the graph then takes uint8 pixels and starts with
  /// the encoding's steps.
  std::optional<InputEncoding> input_encoding = std::nullopt;
};

/// The serialised model of `network` in inference mode for inputs of `spec`: input "input"
/// ([batch, spec.input_shape...]: uint8 pixels with an input encoding, else float images or
/// int64 tokens as the network takes them), output "logits" ([batch, classes]); the class
/// names in the metadata ("class_names", one a line).
/// Throws ql::Error when the topology or one of its layers cannot be exported.
std::string onnx_model(Network& network, const DatasetSpec& spec, const OnnxModelOptions& options);

/// onnx_model written to `file` through a temporary file and a rename: on any error nothing
/// is left at `file`.
void write_onnx_model(Network& network, const DatasetSpec& spec, const std::filesystem::path& file,
                      const OnnxModelOptions& options);

}  // namespace ql::core
