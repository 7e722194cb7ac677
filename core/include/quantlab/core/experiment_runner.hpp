// Running one experiment end to end: plugins from the registry, the network from the
// problem's spec, training with validation and checkpoints (per fold when folds > 1), then each
// algorithm's variants sweep and post-training step, and the results unit with its record,
// metrics, report and plots. A run can be resumed from its last checkpoint and then ends with
// the same weights as an uninterrupted run; SIGINT/SIGTERM stop it after a checkpoint.
//
//   PluginRegistry registry(default_search_path({}));
//   Console console;
//   RunSummary summary = run_experiment({"examples/fashion_mnist_mlp.toml"}, registry, console);
#pragma once

#include "quantlab/core/console.hpp"
#include "quantlab/core/data_parallel.hpp"
#include "quantlab/core/plugin_registry.hpp"
#include "quantlab/sdk/context.hpp"
#include "quantlab/sdk/error.hpp"

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace ql::core {

struct RunRequest {
  std::filesystem::path experiment;
  std::vector<std::string> overrides;  ///< --set KEY=VALUE
  /// Resume a unit: "" the latest of the experiment's problem/topology, "exp0007" or "7" one of
  /// them, or a unit folder's path.
  std::optional<std::string> resume = {};
  /// When set, the unit's path is written to this file as soon as it exists (sweeps).
  std::filesystem::path unit_file = {};
  /// Data-parallel training: this process is one rank of the job (see WorldSettings). Rank 0
  /// writes the results unit; the others keep scratch files in the temporary directory.
  std::optional<WorldSettings> world = {};
};

struct RunSummary {
  std::filesystem::path unit;  ///< the experiment's results folder
  Evaluation trained;          ///< the trained float network on the test split (fold 0)
  Evaluation result;           ///< the network kept after every algorithm's post-training (fold 0)
};

/// Thrown when SIGINT or SIGTERM stopped a run (after its checkpoint was written).
class Interrupted : public Error {
 public:
  using Error::Error;
};

/// Throws ql::ConfigError for a bad experiment (before any work or folder is made),
/// Interrupted for a stop by signal and ql::Error for a failure during the run.
RunSummary run_experiment(const RunRequest& request, PluginRegistry& registry, Console& console);

/// The unit `request.resume` names (see RunRequest::resume) under `logs`.
std::filesystem::path find_unit(const std::filesystem::path& logs, const std::string& problem,
                                const std::string& topology, const std::string& which);

}  // namespace ql::core
