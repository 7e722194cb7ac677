// Where data sets are read from and results written to. Each of `data` and `logs` comes from
// the first place that sets it: the experiment file's [storage] table (relative paths: to the
// experiment file's folder), the environment ($QL_DATA, $QL_LOGS; relative: to the working
// directory), the per-user file (relative: to its folder), else the working directory (data)
// and ./logs (logs).
//
// The per-user file is $QL_CONFIG, else $XDG_CONFIG_HOME/quantlab/storage.toml, else
// ~/.config/quantlab/storage.toml:
//
//   [storage]
//   data = "/srv/datasets"
//   logs = "/home/me/quantlab-logs"
#pragma once

#include "quantlab/sdk/config.hpp"

#include <filesystem>
#include <string>

namespace ql::core {

struct StoragePaths {
  std::filesystem::path data;
  std::filesystem::path logs;
  std::string data_origin;  ///< where `data` came from, for the start-up message
  std::string logs_origin;
};

/// The per-user defaults file (it need not exist).
std::filesystem::path user_storage_file();

/// `storage` is the experiment's [storage] table ("" values: not set); `experiment_file`
/// anchors its relative paths. Throws ql::ConfigError for a malformed per-user file.
StoragePaths resolve_storage(const Config& storage, const std::filesystem::path& experiment_file);

/// The same without an experiment file (for listing results).
StoragePaths default_storage();

}  // namespace ql::core
