#include "quantlab/core/cli.hpp"

#include "quantlab/core/experiment_runner.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/plugin.hpp"

#include <fmt/format.h>

#include <csignal>

#include <cstdio>
#include <exception>

namespace ql::core {

std::string one_line(std::string message) {
  for (char& c : message) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return message;
}

int guarded_main(std::string_view tool, const std::function<int()>& body) {
  try {
    return body();
  } catch (const ConfigError& e) {
    fmt::print(stderr, "{}: error: {}\n", tool, one_line(e.what()));
    return kExitUsage;
  } catch (const Interrupted& e) {
    fmt::print(stderr, "{}: interrupted: {}\n", tool, one_line(e.what()));
    return kExitInterrupted;
  } catch (const std::exception& e) {
    fmt::print(stderr, "{}: error: {}\n", tool, one_line(message_of(e)));
    return kExitFailure;
  }
}

int run_tool(std::string_view tool, std::string_view usage, int argc, char** argv,
             const std::vector<Subcommand>& commands) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    fmt::print("{}", usage);
    return args.empty() ? kExitUsage : kExitOk;
  }
  if (args[0] == "--version") {
    fmt::print("{} {} ({})\n", tool, QL_SDK_VERSION, build_fingerprint());
    return kExitOk;
  }
  const std::string name = args[0];
  args.erase(args.begin());
  // Past a file-size limit (ulimit -f, as on a full quota) a write fails with EFBIG instead of
  // the process dying by SIGXFSZ: the writer reports it and the previous file stays.
  std::signal(SIGXFSZ, SIG_IGN);
  return guarded_main(tool, [&] {
    std::vector<std::string> names;
    for (const auto& [command, run] : commands) {
      if (command == name) return run(args);
      names.push_back(command);
    }
    throw ConfigError(fmt::format("unknown command '{}' (commands: {})", name, fmt::join(names, ", ")));
  });
}

}  // namespace ql::core
