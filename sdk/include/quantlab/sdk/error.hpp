// Errors raised inside plugins and the host: exceptions with context, caught once at the CLI.
//
//   QL_CHECK(bits >= 1, "bits must be at least 1, got {}", bits);
//   throw ql::ConfigError("exp.toml:4:1: unknown key 'epoch'");
//   try { ... } catch (const ql::ConfigError& e) { return 2; }
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace ql {

/// A failure while running (bad data file, numerical problem, I/O error). Exit code 1.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
  ~Error() override;
};

/// A mistake in what the user asked for (config, options, command line). Exit code 2.
class ConfigError : public Error {
 public:
  using Error::Error;
  ~ConfigError() override;
};

/// The message of `error` for a user: LibTorch's errors (c10::Error) without their C++
/// backtrace, others as what() says.
std::string message_of(const std::exception& error);

}  // namespace ql

/// Throws ql::Error with a formatted message when `cond` is false.
#define QL_CHECK(cond, ...)                               \
  do {                                                    \
    if (!(cond)) throw ::ql::Error(fmt::format(__VA_ARGS__)); \
  } while (false)
