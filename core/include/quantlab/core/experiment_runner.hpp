// Running one experiment end to end: plugins from the registry, the network from the
// problem's spec, training with validation and checkpoints, then each algorithm's variants
// sweep and post-training step, and the results folder.
//
//   PluginRegistry registry(default_search_path({}));
//   Console console;
//   RunSummary summary = run_experiment({"examples/fashion_mnist_mlp.toml", {}}, registry, console);
#pragma once

#include "quantlab/core/console.hpp"
#include "quantlab/core/plugin_registry.hpp"
#include "quantlab/sdk/context.hpp"

#include <filesystem>
#include <string>
#include <vector>

namespace ql::core {

struct RunRequest {
  std::filesystem::path experiment;
  std::vector<std::string> overrides;  ///< --set KEY=VALUE
};

struct RunSummary {
  std::filesystem::path unit;  ///< the experiment's results folder
  Evaluation trained;          ///< the trained float network on the test split
  Evaluation result;           ///< the network kept after every algorithm's post-training
};

/// Throws ql::ConfigError for a bad experiment (before any work or folder is made) and
/// ql::Error for a failure during the run.
RunSummary run_experiment(const RunRequest& request, PluginRegistry& registry, Console& console);

}  // namespace ql::core
