// A fold's kept result as an ONNX model: what `[export]` writes at the end of a fold and
// `qlhost export` remakes from a finished unit (quantlab/core/unit_export.hpp), one path for both.
#pragma once

#include "quantlab/core/experiment_config.hpp"
#include "quantlab/core/onnx_export.hpp"
#include "run/checkpoints.hpp"

#include <filesystem>

namespace ql::core::run {

/// Writes the model of `network`, which holds the result's effective weights, to `file` with
/// `model`'s opset and folding: the tensors of `record.integer_forms` as integer codes, its
/// activation grids as QuantizeLinear/DequantizeLinear, `record.input_encoding` as its first
/// nodes, the unit's problem and topology in its metadata. Throws ql::Error, leaving nothing at
/// `file`, when the network cannot be exported.
void write_result_model(Network& network, const DatasetSpec& spec, const ExperimentConfig& config,
                        const std::filesystem::path& unit, const ResultRecord& record, OnnxModelOptions model,
                        const std::filesystem::path& file);

}  // namespace ql::core::run
