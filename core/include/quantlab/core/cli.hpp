// What the command-line tools share: the one place where errors become a single line on
// stderr and an exit code (0 success, 1 failure during the work, 2 bad usage or config).
//
//   int main(int argc, char** argv) {
//     return ql::core::guarded_main("qlsdk", [&] { return run(argc, argv); });
//   }
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace ql::core {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

/// Runs `body`; a ql::ConfigError exits 2, any other exception 1, each printed as
/// "TOOL: error: MESSAGE" on one line.
int guarded_main(std::string_view tool, const std::function<int()>& body);

/// `message` with line breaks replaced by spaces.
std::string one_line(std::string message);

}  // namespace ql::core
