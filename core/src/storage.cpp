#include "quantlab/core/storage.hpp"

#include "toml_file.hpp"
#include "quantlab/sdk/error.hpp"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <cstdlib>
#include <optional>

namespace ql::core {

namespace fs = std::filesystem;

namespace {

std::optional<std::string> environment(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

struct UserDefaults {
  std::optional<fs::path> data, logs;
};

UserDefaults read_user_defaults(const fs::path& file) {
  UserDefaults defaults;
  std::error_code error;
  if (!fs::is_regular_file(file, error)) return defaults;
  const toml::table root = read_toml_file<ConfigError>(file);
  for (const auto& [key, node] : root) {
    if (key.str() != "storage" || !node.is_table()) {
      throw ConfigError(fmt::format("{}: unknown entry '{}' (expected a [storage] table with data and logs)",
                                    file.string(), key.str()));
    }
  }
  if (const toml::table* storage = root["storage"].as_table()) {
    for (const auto& [key, node] : *storage) {
      const auto value = node.value_exact<std::string>();
      if ((key.str() != "data" && key.str() != "logs") || !value) {
        throw ConfigError(fmt::format("{}:{}:{}: storage.{}: expected data = \"PATH\" or logs = \"PATH\"",
                                      file.string(), node.source().begin.line, node.source().begin.column,
                                      key.str()));
      }
      const fs::path path = file.parent_path() / *value;
      (key.str() == "data" ? defaults.data : defaults.logs) = fs::path(*value).is_absolute() ? fs::path(*value) : path;
    }
  }
  return defaults;
}

StoragePaths resolve(const std::optional<fs::path>& data_in_file, const std::optional<fs::path>& logs_in_file,
                     const std::string& file_origin) {
  const fs::path user_file = user_storage_file();
  const UserDefaults user = read_user_defaults(user_file);
  StoragePaths paths;
  auto choose = [&](const std::optional<fs::path>& in_file, const char* variable,
                    const std::optional<fs::path>& from_user, const fs::path& fallback, fs::path& out,
                    std::string& origin) {
    if (in_file) {
      out = *in_file;
      origin = file_origin;
    } else if (auto value = environment(variable)) {
      out = fs::absolute(*value);
      origin = fmt::format("${}", variable);
    } else if (from_user) {
      out = *from_user;
      origin = user_file.string();
    } else {
      out = fallback;
      origin = "default";
    }
    out = out.lexically_normal();
  };
  choose(data_in_file, "QL_DATA", user.data, fs::current_path(), paths.data, paths.data_origin);
  choose(logs_in_file, "QL_LOGS", user.logs, fs::current_path() / "logs", paths.logs, paths.logs_origin);
  return paths;
}

}  // namespace

fs::path user_storage_file() {
  if (auto file = environment("QL_CONFIG")) return *file;
  if (auto config = environment("XDG_CONFIG_HOME")) return fs::path(*config) / "quantlab/storage.toml";
  if (auto home = environment("HOME")) return fs::path(*home) / ".config/quantlab/storage.toml";
  return {};
}

StoragePaths resolve_storage(const Config& storage, const fs::path& experiment_file) {
  const fs::path anchor = fs::absolute(experiment_file).parent_path();
  auto from_file = [&](const char* key) -> std::optional<fs::path> {
    const fs::path value = storage.get_string(key);
    if (value.empty()) return std::nullopt;
    return value.is_absolute() ? value : anchor / value;
  };
  return resolve(from_file("data"), from_file("logs"), experiment_file.string());
}

StoragePaths default_storage() { return resolve(std::nullopt, std::nullopt, ""); }

}  // namespace ql::core
