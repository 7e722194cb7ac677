#include "quantlab/core/cli.hpp"

#include "quantlab/sdk/error.hpp"

#include <fmt/format.h>

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
  } catch (const std::exception& e) {
    fmt::print(stderr, "{}: error: {}\n", tool, one_line(message_of(e)));
    return kExitFailure;
  }
}

}  // namespace ql::core
