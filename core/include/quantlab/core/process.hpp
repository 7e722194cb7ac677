// Child processes without a shell: run a program, capture what it prints, wait for it.
//
//   auto [status, out] = capture_output({"git", "-C", dir, "rev-parse", "HEAD"});
//   pid_t child = spawn({"/usr/bin/qlhost", "run", "exp.toml"}, "run.log");
//   int exit_code = wait_for(child);
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <sys/types.h>

namespace ql::core {

/// Runs `argv` (argv[0] looked up in PATH), returns its exit code (-1: it could not start or
/// died by a signal) and its standard output; its standard error is discarded.
std::pair<int, std::string> capture_output(const std::vector<std::string>& argv);

/// Starts `argv` with standard output and error appended to `log`; throws ql::Error when it
/// cannot start.
pid_t spawn(const std::vector<std::string>& argv, const std::filesystem::path& log);

/// Starts `argv` with this process's environment, `environment` added (replacing variables of
/// the same name), sharing its standard output and error, with no signal blocked or ignored.
pid_t spawn_with_environment(const std::vector<std::string>& argv,
                             const std::vector<std::pair<std::string, std::string>>& environment);

/// Waits for `child`; its exit code, or 128 + signal number when a signal ended it.
int wait_for(pid_t child);

/// The path of the running executable.
std::filesystem::path current_executable();

}  // namespace ql::core
