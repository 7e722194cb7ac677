#include "run/unit_lifecycle.hpp"

#include "quantlab/core/data_parallel.hpp"
#include "quantlab/core/experiment_store.hpp"
#include "quantlab/sdk/error.hpp"

#include <fmt/format.h>

#include <unistd.h>

namespace ql::core::run {

namespace fs = std::filesystem;

std::string resolved_config_text(const RunRequest& request, const ExperimentConfig& config) {
  return fmt::format("# resolved configuration of {}\n# quantlab {} fingerprint {}\n\n{}\n", request.experiment.string(),
                     QL_SDK_VERSION, build_fingerprint(), config.to_toml());
}

void update_record(const Experiment& x) { write_unit_record(x.unit, x.record); }

namespace {

// The keys whose values differ between two resolved configurations, [run] and [storage] aside
// (threads, device and paths may change between a run and its resume).
std::vector<std::string> relevant_differences(const std::string& before, const std::string& after) {
  std::vector<std::string> differences;
  for (const std::string& line : config_differences(before, after)) {
    if (line.rfind("run.", 0) != 0 && line.rfind("storage.", 0) != 0) differences.push_back(line);
  }
  return differences;
}

void reopen_for_resume(Experiment& x, const RunRequest& request, const StoragePaths& storage,
                       const std::string& config_text) {
  x.unit = find_unit(storage.logs, x.config.problem().name, x.config.topology().name, *request.resume);
  x.record = read_unit_record(x.unit);
  QL_CHECK(x.record.live_status() != "running", "{} is still running (pid {} on {})", x.unit.string(), x.record.pid,
           x.record.host);
  QL_CHECK(x.record.status != "done", "{} is already done; nothing to resume", x.unit.string());
  const auto differences = relevant_differences(read_text_file(x.unit / "config.toml"), config_text);
  if (!differences.empty()) {
    throw ConfigError(fmt::format("{} was run with another configuration ({}); resume it with the same "
                                  "experiment file and --set options",
                                  x.unit.string(), fmt::join(differences, "; ")));
  }
  ++x.record.resumes;
  x.record.message.clear();
}

void create_unit(Experiment& x, const RunRequest& request, const StoragePaths& storage,
                 const std::string& config_text) {
  const ExperimentConfig& config = x.config;
  x.unit = allocate_unit(storage.logs, config.problem().name, config.topology().name);
  write_file_atomically(x.unit / "config.toml", config_text);
  x.record.experiment = request.experiment.string();
  x.record.problem = config.problem().name;
  x.record.topology = config.topology().name;
  x.record.started = local_time_now();
  x.record.epochs = x.settings.epochs;
  x.record.quantlab_version = QL_SDK_VERSION;
  x.record.fingerprint = build_fingerprint();
  x.record.git_revision = git_revision_of(request.experiment);
  if (x.weights) {
    x.record.weights = fs::absolute(x.weights->path).string();
    x.record.weights_sha256 = x.weights->sha256;
  }
  std::vector<std::pair<PluginKind, std::string>> used{{PluginKind::problem, config.problem().name},
                                                       {PluginKind::topology, config.topology().name}};
  for (const PluginChoice& choice : x.algorithm_choices) used.emplace_back(PluginKind::algorithm, choice.name);
  for (const auto& [kind, name] : used) {
    const PluginMetadata& p = x.registry.find(kind, name);
    x.record.plugins.push_back({std::string(to_string(kind)), p.name, p.version, p.fingerprint, p.path.string()});
  }
  x.record.folds.assign(static_cast<std::size_t>(x.settings.folds), FoldRecord{});
}

}  // namespace

void open_unit(Experiment& x, const RunRequest& request, const StoragePaths& storage, const std::string& config_text,
               const fs::path& scratch) {
  if (!x.root) {
    // The other ranks keep their files (metrics, plugin artefacts) in a scratch folder; rank 0
    // tells them which folds are done.
    x.unit = scratch;
    write_file_atomically(x.unit / "unit.toml", x.world->broadcast_bytes({}));
    x.record = read_unit_record(x.unit);
  } else if (x.resuming) {
    reopen_for_resume(x, request, storage, config_text);
  } else {
    create_unit(x, request, storage, config_text);
  }
  x.record.status = "running";
  x.record.pid = ::getpid();
  x.record.host = host_name();
  x.record.ended.clear();
  update_record(x);
  if (x.world != nullptr && x.root) x.world->broadcast_bytes(read_text_file(x.unit / "unit.toml"));
}

void close_unit(Experiment& x, const std::string& status, const std::string& message) {
  x.record.status = status;
  x.record.message = message;
  x.record.ended = local_time_now();
  update_record(x);
}

}  // namespace ql::core::run
