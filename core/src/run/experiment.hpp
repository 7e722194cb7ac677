// What every fold of a run shares: the loaded experiment, its plugins, the results unit and its
// record, and the seed streams derived from the experiment seed.
#pragma once

#include "quantlab/core/console.hpp"
#include "quantlab/core/experiment_config.hpp"
#include "quantlab/core/onnx_export.hpp"
#include "quantlab/core/plugin_registry.hpp"
#include "quantlab/core/trainer.hpp"
#include "quantlab/core/unit_record.hpp"
#include "quantlab/core/weights_file.hpp"

#include <c10/core/Device.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <vector>

namespace ql::core {
class DataParallel;
}

namespace ql::core::run {

/// Seed streams derived from the experiment seed, one per purpose.
enum SeedStream : std::uint64_t {
  kShuffleStream = 1,
  kAugmentStream = 2,
  kCalibrationStream = 3,
  kFoldStream = 4,
  kRankStream = 5,
  kPluginStreams = 100,  ///< algorithm i: kPluginStreams + i
};

/// What the [export] section asks for at the end of each fold.
enum class ExportFormat { none, onnx, h5, onnx_and_h5 };
struct ExportSettings {
  bool onnx = false;       ///< fold<k>/result.onnx
  bool h5 = false;         ///< fold<k>/quantized.h5
  OnnxModelOptions model;  ///< opset and batch-norm folding; the run adds metadata and input encoding
};

struct Experiment {
  const ExperimentConfig& config;
  PluginRegistry& registry;
  Console& console;
  Problem& problem;
  Topology& topology;
  std::vector<PluginChoice> algorithm_choices;
  TrainingSettings settings;
  std::uint64_t seed = 0;
  c10::Device device{c10::kCPU};
  Precision precision = Precision::fp32;
  std::size_t prefetch = 0;
  bool top5 = false;
  bool step_scalars = true;
  std::int64_t histogram_every = 0;
  ExportSettings exporting = {};
  /// [topology] weights: the tensors every fold's network starts from, and whether they must
  /// fit it exactly.
  std::optional<WeightsFile> weights = std::nullopt;
  bool weights_strict = true;
  bool resuming = false;
  std::filesystem::path unit = {};
  UnitRecord record = {};
  DataParallel* world = nullptr;  ///< data-parallel training: this process's group
  bool root = true;               ///< writes the results unit (the only process, or rank 0)
};

/// Rewrites the unit's record (unit.toml) from `x.record`.
void update_record(const Experiment& x);

}  // namespace ql::core::run
