// What a results unit (expNNNN) says about itself, in unit.toml next to config.toml: status
// (running, done, failed, interrupted), times, versions and fingerprints of the host and every
// plugin, the experiment file's git revision, and each fold's progress and results. Rewritten
// atomically whenever it changes, so a listing never reads half a file.
//
//   UnitRecord record = read_unit_record(unit);
//   record.status = "done";
//   write_unit_record(unit, record);
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace ql::core {

struct FoldRecord {
  std::string status = "pending";  ///< pending, running, done
  std::int64_t epochs_done = 0;
  std::int64_t steps = 0;
  std::string best_metric;   ///< "valid/top1", "valid/loss", or "train/loss" without a validation split
  double best_value = 0.0;
  std::int64_t best_epoch = 0;
  double trained_top1 = -1.0;  ///< the trained network on the test split (-1: not yet)
  double trained_loss = -1.0;
  double result_top1 = -1.0;   ///< after every algorithm's post-training
  double result_loss = -1.0;
};

struct PluginRecord {
  std::string kind, name, version, fingerprint, file;
};

struct UnitRecord {
  std::string status = "running";  ///< running, done, failed, interrupted
  std::string message;             ///< the error of a failed run
  std::string experiment;          ///< the experiment file as given
  std::string problem, topology;
  std::string started, ended;      ///< local time, ISO 8601
  std::int64_t pid = 0;
  std::string host;
  std::int64_t resumes = 0;
  std::int64_t epochs = 0;         ///< planned per fold
  std::string quantlab_version, fingerprint, git_revision;
  std::string weights, weights_sha256;  ///< [topology] weights: the file read and its SHA-256
  std::vector<PluginRecord> plugins;
  std::vector<FoldRecord> folds;

  /// status, with "running" shown as "killed" when its process no longer exists on this host.
  std::string live_status() const;
};

void write_unit_record(const std::filesystem::path& unit, const UnitRecord& record);
/// Throws ql::Error naming the file when it is missing or malformed.
UnitRecord read_unit_record(const std::filesystem::path& unit);

/// The current local time as "YYYY-MM-DDTHH:MM:SS".
std::string local_time_now();
/// This machine's host name.
std::string host_name();
/// `git rev-parse HEAD` (with "+dirty" for local changes) of the repository holding `path`,
/// or "" when there is none or git is not installed.
std::string git_revision_of(const std::filesystem::path& path);

}  // namespace ql::core
