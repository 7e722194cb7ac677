// `qlhost export UNIT`: a finished unit's kept result as an ONNX model (docs/export.md), made
// from what the unit keeps: its resolved configuration (the network is rebuilt from it) and
// its result checkpoint (weights, each quantised tensor's integer form, the input encoding).
#pragma once

#include "quantlab/core/plugin_registry.hpp"

#include <cstddef>
#include <filesystem>

namespace ql::core {

struct UnitExportRequest {
  std::filesystem::path unit;     ///< a results unit (expNNNN)
  std::size_t fold = 0;
  int opset = 13;                 ///< 13 or 21
  std::filesystem::path output;   ///< empty: <unit>/fold<k>/result.onnx
};

/// Writes the model and returns its path. Throws ql::Error when the unit has no result yet,
/// the network cannot be exported, or the output cannot be written (nothing is left there).
std::filesystem::path export_unit(const UnitExportRequest& request, PluginRegistry& registry);

}  // namespace ql::core
