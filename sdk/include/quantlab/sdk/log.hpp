// Messages from a plugin to the user, through the host's console: info lines, warnings, and
// debug lines. Problems get one when their data is read; algorithms get one as their Context.
// The host's is safe to call from any thread (a problem's loader threads warn through it).
//
//   log.warn("skipped {} ({} so far)", file.string(), skipped);
//   log.info("{} images in {} classes", images, classes);
#pragma once

#include <fmt/format.h>

#include <string_view>
#include <utility>

namespace ql {

enum class LogLevel { debug, info, warning };

class Log {
 public:
  virtual ~Log();
  virtual void log(LogLevel level, std::string_view message) = 0;

  template <typename... Args>
  void info(fmt::format_string<Args...> format, Args&&... args) {
    log(LogLevel::info, fmt::format(format, std::forward<Args>(args)...));
  }
  template <typename... Args>
  void warn(fmt::format_string<Args...> format, Args&&... args) {
    log(LogLevel::warning, fmt::format(format, std::forward<Args>(args)...));
  }
};

/// A Log that prints warnings to stderr and drops the rest, for tools and tests that use a
/// plugin outside the host. Stateless, so one serves every caller.
Log& stderr_log();

}  // namespace ql
