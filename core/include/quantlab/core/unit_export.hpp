// `qlhost export UNIT`: a finished unit's kept result as an ONNX model (docs/export.md), made
// from what the unit keeps: its resolved configuration (the network is rebuilt from it) and
// its result checkpoint (weights, each quantised tensor's integer form, the input encoding).
#pragma once

#include "quantlab/core/plugin_registry.hpp"

#include <cstddef>
#include <filesystem>

namespace ql::core {

/// What `qlhost export` writes: an ONNX model, or quantized.h5 (docs/export.md).
enum class UnitExportFormat { onnx, h5 };

struct UnitExportRequest {
  std::filesystem::path unit;     ///< a results unit (expNNNN)
  UnitExportFormat format = UnitExportFormat::onnx;
  std::size_t fold = 0;
  int opset = 13;                 ///< 13 or 21
  bool fold_batch_norm = false;   ///< fold batch norms into the layers before them
  std::filesystem::path output;   ///< empty: <unit>/fold<k>/result.onnx or quantized.h5
};

/// Writes the model and returns its path. Throws ql::Error when the unit has no result yet,
/// the network cannot be exported, or the output cannot be written (nothing is left there).
std::filesystem::path export_unit(const UnitExportRequest& request, PluginRegistry& registry);

}  // namespace ql::core
