// Helpers shared by the test suites: temporary folders, files, configs, running qlhost.
#pragma once

#include "quantlab/sdk/config.hpp"

#include <cstdint>
#include <filesystem>
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
/// Runs qlhost with `args` (already shell-quoted), HOME set to `home` so no user plugin leaks in.
CommandResult run_qlhost(const std::string& args, const std::filesystem::path& home);
/// `text` quoted for the shell.
std::string quoted(const std::string& text);

/// A small image classification set in MNIST's IDX format: `classes` classes of `size`x`size`
/// images, each class a bright bar at its own row, with noise; learnable in a few epochs.
void write_idx_dataset(const std::filesystem::path& dir, std::int64_t train, std::int64_t test,
                       std::int64_t size, std::int64_t classes, bool gzip);

}  // namespace ql::test
