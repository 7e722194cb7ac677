// Sweeps: one results unit per combination of --grid values, run as child `qlhost run`
// processes (at most `jobs` at a time) or written as a Slurm job-array script. The sweep's
// folder <logs>/<problem>/<topology>/sweepNNNN holds sweep.toml (the combinations and, as they
// finish, their units and exit codes), runs/<i>.log and runs/<i>.unit, and the report.
//
//   SweepRequest request{"exp.toml", {}, {"training.optimizer.lr=[0.1,0.01]", "training.epochs=[5,10]"}};
//   fs::path sweep = run_sweep(request, registry, console);   // 4 units
#pragma once

#include "quantlab/core/console.hpp"
#include "quantlab/core/plugin_registry.hpp"

#include <filesystem>
#include <string>
#include <vector>

namespace ql::core {

struct SweepRequest {
  std::filesystem::path experiment;
  std::vector<std::string> overrides;    ///< --set, applied to every unit
  std::vector<std::string> grids;        ///< --grid KEY=[V1,V2,...]
  int jobs = 1;                          ///< units run at the same time
  std::string launcher = "local";        ///< local | slurm
  std::vector<std::string> plugin_dirs;  ///< passed on to every unit
};

/// Every combination of the grids, as --set assignments ("key=value"), the first grid varying
/// slowest. Throws ql::ConfigError for a grid that is not KEY=[non-empty TOML array].
std::vector<std::vector<std::string>> grid_combinations(const std::vector<std::string>& grids);

/// Checks every combination's configuration, creates the sweep folder, then runs the units
/// (local) or writes sweep.sbatch (slurm). Returns the sweep folder. Throws ql::Error when a
/// unit failed (after all have run).
std::filesystem::path run_sweep(const SweepRequest& request, PluginRegistry& registry, Console& console);

}  // namespace ql::core
