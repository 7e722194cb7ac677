// Reading a TOML file that QuantLab or the user wrote, with the parse error's file:line:column
// in the exception (core-internal; the public headers keep toml++ out).
#pragma once

#include "quantlab/sdk/error.hpp"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <filesystem>

namespace ql::core {

/// Throws E (ql::Error or ql::ConfigError) naming the file and position of a syntax error.
template <typename E = Error>
toml::table read_toml_file(const std::filesystem::path& file) {
  try {
    return toml::parse_file(file.string());
  } catch (const toml::parse_error& e) {
    throw E(fmt::format("{}:{}:{}: {}", file.string(), e.source().begin.line, e.source().begin.column, e.description()));
  }
}

}  // namespace ql::core
