// Helpers shared by the test suites: temporary folders, files, configs, running qlhost.
#pragma once

#include "quantlab/sdk/config.hpp"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace ql::test {

/// A fresh folder removed at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

void write_text(const std::filesystem::path& path, const std::string& text);
void write_bytes(const std::filesystem::path& path, const std::vector<std::uint8_t>& bytes);
std::vector<std::uint8_t> read_bytes(const std::filesystem::path& path);
std::string read_text(const std::filesystem::path& path);
/// Writes `bytes` gzip-compressed.
void write_gzip(const std::filesystem::path& path, const std::vector<std::uint8_t>& bytes);

/// A config view of TOML `text` (as if it were the file `source`).
Config config_from_toml(const std::string& text, const std::string& source = "test.toml");

struct CommandResult {
  int exit_code;
  std::string out;
  std::string err;
};
/// Runs a shell command line, capturing its output.
CommandResult run_command(const std::string& command_line);
/// The qlhost under test: $QL_TEST_QLHOST (a GPU bundle's launcher, bench/gpu/check.sh) or the
/// build's own.
std::string qlhost_program();
/// Runs qlhost with `args` (already shell-quoted), HOME set to `home` so no user plugin leaks in.
CommandResult run_qlhost(const std::string& args, const std::filesystem::path& home);
/// A unit's fold<k>/confusion.csv read back: its class names (the header after "label"), and
/// the sum of its diagonal and of all its counts.
struct Confusion {
  std::vector<std::string> classes;
  double diagonal = 0, total = 0;
};
Confusion read_confusion(const std::filesystem::path& csv);

/// `text` quoted for the shell.
std::string quoted(const std::string& text);

/// A small image classification set in MNIST's IDX format: `classes` classes of `size`x`size`
/// images, each class a bright bar at its own row, with noise; learnable in a few epochs.
void write_idx_dataset(const std::filesystem::path& dir, std::int64_t train, std::int64_t test,
                       std::int64_t size, std::int64_t classes, bool gzip);

/// An experiment on write_idx_dataset's files in `data/` of its folder (4 classes of 28x28, a
/// tenth held out): MLP 784-64-4 (no dropout, so runs repeat exactly), SGD with momentum at a
/// learning rate low enough to keep learning through 3 epochs of batches of 16, a checkpoint
/// every 5 steps, 1 thread, deterministic; results in `logs/`.
std::string small_mlp_experiment(int seed);

/// The network's tensors ("model/...") of a QuantLab checkpoint (checksum checked), by name.
std::map<std::string, at::Tensor> checkpoint_model(const std::filesystem::path& checkpoint);
/// The quantiser descriptions a result checkpoint records, by tensor ("fc1.weight").
std::map<std::string, std::string> checkpoint_quantizers(const std::filesystem::path& checkpoint);

/// Waits (up to 120 s) until `unit`'s record says fold 0 has checkpointed at least `steps`
/// optimiser steps; false when it never does.
bool wait_for_checkpointed_steps(const std::filesystem::path& unit, std::int64_t steps);

}  // namespace ql::test
