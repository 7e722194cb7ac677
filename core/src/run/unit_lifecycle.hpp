// The results unit through a run: made (or found again to resume, refusing another
// configuration), its record kept up to date, and marked done, failed or interrupted at the
// end. Ranks other than 0 keep their files in a scratch folder of their own.
#pragma once

#include "quantlab/core/experiment_runner.hpp"
#include "quantlab/core/storage.hpp"
#include "run/experiment.hpp"

#include <filesystem>
#include <string>

namespace ql::core::run {

/// The resolved configuration as config.toml holds it.
std::string resolved_config_text(const RunRequest& request, const ExperimentConfig& config);

/// Sets x.unit and x.record: a new unit under storage.logs, the one `request.resume` names,
/// or (ranks other than 0) `scratch` with rank 0's record. Marks it running.
void open_unit(Experiment& x, const RunRequest& request, const StoragePaths& storage, const std::string& config_text,
               const std::filesystem::path& scratch);

/// Records how the run ended: "done", "interrupted" or "failed" with its message.
void close_unit(Experiment& x, const std::string& status, const std::string& message = {});

}  // namespace ql::core::run
