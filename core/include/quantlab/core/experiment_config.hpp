// Loading an experiment file: parse the TOML, apply --set overrides, merge each section with
// its defaults (the host's own schema for [experiment], [training], [run], [storage]; each
// plugin's default-config text for [problem], [topology] and every [[algorithm]]) and reject
// every unknown key or wrong type with file:line:column and the closest valid names.
//
//   auto config = ExperimentConfig::load("exp.toml", {"training.epochs=3"}, registry);
//   int64_t epochs = config.section("training").get_int("epochs", 1, 100000);
//   auto mnist = registry.create<ql::Problem>(config.problem().name, config.problem().options);
#pragma once

#include "quantlab/core/plugin_registry.hpp"
#include "quantlab/sdk/config.hpp"

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ql::core {

/// The host's own sections with their defaults and documentation (TOML text).
std::string_view host_schema();

/// A plugin's options outside an experiment: its defaults with `overrides` ("key=value")
/// applied and checked like an experiment file's table.
Config plugin_options(const PluginMetadata& plugin, const std::vector<std::string>& overrides);

/// "key: before -> after" for each leaf value that differs between two TOML texts (resolved
/// configurations), "key: (none) -> after" for added ones and the reverse for removed ones.
std::vector<std::string> config_differences(const std::string& before, const std::string& after);

/// A plugin chosen by an experiment and its merged options.
struct PluginChoice {
  PluginKind kind;
  std::string name;
  Config options;
};

class ExperimentConfig {
 public:
  /// Throws ql::ConfigError (with file:line:column) for anything the user must fix.
  static ExperimentConfig load(const std::filesystem::path& file,
                               const std::vector<std::string>& overrides,
                               const PluginRegistry& registry);

  const std::filesystem::path& file() const { return file_; }
  /// One of the host's sections: "experiment", "storage", "training", "metrics", "run", "export".
  Config section(std::string_view name) const;
  const PluginChoice& problem() const { return plugins_.at(0); }
  const PluginChoice& topology() const { return plugins_.at(1); }
  /// The [[algorithm]] entries in file order.
  std::vector<PluginChoice> algorithms() const;
  /// The resolved configuration (every default filled in) as TOML text.
  std::string to_toml() const;

 private:
  ExperimentConfig() = default;
  std::filesystem::path file_;
  Config root_{nullptr};
  std::vector<PluginChoice> plugins_;  // problem, topology, then algorithms
};

}  // namespace ql::core
