// What the command-line tools share: the one place where errors become a single line on
// stderr and an exit code (0 success, 1 failure during the work, 2 bad usage or config, 130
// stopped by a signal after a checkpoint).
//
//   int main(int argc, char** argv) {
//     return ql::core::run_tool("qlsdk", kUsage, argc, argv, {{"inspect", command_inspect}});
//   }
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ql::core {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;
/// A run stopped by SIGINT/SIGTERM after writing its checkpoint (128 + SIGINT, as shells do).
inline constexpr int kExitInterrupted = 130;

/// Runs `body`; a ql::ConfigError exits 2, any other exception 1, each printed as
/// "TOOL: error: MESSAGE" on one line.
int guarded_main(std::string_view tool, const std::function<int()>& body);

/// A subcommand: its name and what runs it with the arguments after the name.
using Subcommand = std::pair<std::string, std::function<int(const std::vector<std::string>&)>>;

/// The whole of a tool's main(): no arguments or --help print `usage`, --version prints
/// `tool` and the build fingerprint, otherwise the named subcommand runs under guarded_main.
int run_tool(std::string_view tool, std::string_view usage, int argc, char** argv,
             const std::vector<Subcommand>& commands);

/// `message` with line breaks replaced by spaces.
std::string one_line(std::string message);

}  // namespace ql::core
