#include "config_impl.hpp"

#include "quantlab/sdk/error.hpp"

#include <fmt/format.h>

#include <limits>
#include <sstream>

namespace ql {

std::string source_location(const toml::node& node) {
  const auto& source = node.source();
  const std::string file = source.path ? *source.path : std::string("<defaults>");
  // Values from --set KEY=VALUE carry that text as their source; a line number adds nothing.
  if (source.begin.line == 0 || file.rfind("--set ", 0) == 0) return file;
  return fmt::format("{}:{}:{}", file, source.begin.line, source.begin.column);
}

std::string_view type_name(toml::node_type type) {
  switch (type) {
    case toml::node_type::table: return "table";
    case toml::node_type::array: return "array";
    case toml::node_type::string: return "string";
    case toml::node_type::integer: return "integer";
    case toml::node_type::floating_point: return "float";
    case toml::node_type::boolean: return "boolean";
    case toml::node_type::date: return "date";
    case toml::node_type::time: return "time";
    case toml::node_type::date_time: return "date-time";
    default: return "nothing";
  }
}

Config::Config(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
Config::Config(const Config&) = default;
Config& Config::operator=(const Config&) = default;
Config::~Config() = default;

namespace {

std::string dotted(const std::string& path, std::string_view key) {
  if (path.empty()) return std::string(key);
  if (key.empty()) return path;
  return fmt::format("{}.{}", path, key);
}

}  // namespace

bool Config::has(std::string_view key) const { return impl_->table->contains(key); }

std::vector<std::string> Config::keys() const {
  std::vector<std::string> keys;
  for (const auto& [key, node] : *impl_->table) keys.emplace_back(key.str());
  return keys;
}

std::string Config::where(std::string_view key) const {
  if (!key.empty()) {
    if (const toml::node* node = impl_->table->get(key)) return source_location(*node);
  }
  return source_location(*impl_->table);
}

const std::string& Config::path() const { return impl_->path; }

std::string Config::error_message(std::string_view key, std::string_view what) const {
  return fmt::format("{}: {}: {}", where(key), dotted(impl_->path, key), what);
}

namespace {

const toml::node& require(const Config& config, std::string_view key) {
  const toml::node* node = config.impl().table->get(key);
  if (!node) throw ConfigError(config.error_message(key, "missing required option"));
  return *node;
}

[[noreturn]] void wrong_type(const Config& config, std::string_view key, const toml::node& node,
                             std::string_view expected) {
  throw ConfigError(config.error_message(
      key, fmt::format("expected {}, got {}", expected, type_name(node.type()))));
}

double to_double(const Config& config, std::string_view key, const toml::node& node) {
  if (auto value = node.value_exact<double>()) return *value;
  if (auto value = node.value_exact<std::int64_t>()) return static_cast<double>(*value);
  wrong_type(config, key, node, "a number");
}

}  // namespace

std::int64_t Config::get_int(std::string_view key) const {
  return get_int(key, std::numeric_limits<std::int64_t>::min(),
                 std::numeric_limits<std::int64_t>::max());
}

std::int64_t Config::get_int(std::string_view key, std::int64_t min, std::int64_t max) const {
  const toml::node& node = require(*this, key);
  auto value = node.value_exact<std::int64_t>();
  if (!value) wrong_type(*this, key, node, "an integer");
  if (*value < min || *value > max) {
    throw ConfigError(error_message(
        key, fmt::format("expected an integer in [{}, {}], got {}", min, max, *value)));
  }
  return *value;
}

double Config::get_double(std::string_view key) const {
  return to_double(*this, key, require(*this, key));
}

double Config::get_double(std::string_view key, double min, double max) const {
  const double value = get_double(key);
  if (!(value >= min && value <= max)) {
    throw ConfigError(error_message(
        key, fmt::format("expected a number in [{}, {}], got {}", min, max, value)));
  }
  return value;
}

bool Config::get_bool(std::string_view key) const {
  const toml::node& node = require(*this, key);
  auto value = node.value_exact<bool>();
  if (!value) wrong_type(*this, key, node, "a boolean");
  return *value;
}

std::string Config::get_string(std::string_view key) const {
  const toml::node& node = require(*this, key);
  auto value = node.value_exact<std::string>();
  if (!value) wrong_type(*this, key, node, "a string");
  return *value;
}

std::filesystem::path Config::get_path(std::string_view key) const {
  const std::filesystem::path value = get_string(key);
  if (value.empty() || value.is_absolute() || impl_->base_dir.empty()) return value;
  return impl_->base_dir / value;
}

const std::filesystem::path& Config::base_dir() const { return impl_->base_dir; }

Config Config::with_base_dir(std::filesystem::path dir) const {
  auto impl = std::make_shared<Impl>(*impl_);
  impl->base_dir = std::move(dir);
  return Config(std::move(impl));
}

std::string Config::get_choice(std::string_view key,
                               std::initializer_list<std::string_view> choices) const {
  return get_choice_of(key, std::vector<std::string_view>(choices));
}

std::string Config::get_choice_of(std::string_view key, const std::vector<std::string_view>& choices) const {
  std::string value = get_string(key);
  for (std::string_view choice : choices) {
    if (value == choice) return value;
  }
  throw ConfigError(error_message(
      key, fmt::format("expected one of \"{}\", got \"{}\"", fmt::join(choices, "\", \""), value)));
}

namespace {

template <typename T, typename Convert>
std::vector<T> get_list(const Config& config, std::string_view key, std::string_view expected,
                        Convert convert) {
  const toml::node& node = require(config, key);
  const toml::array* array = node.as_array();
  if (!array) wrong_type(config, key, node, fmt::format("an array of {}", expected));
  std::vector<T> values;
  for (const toml::node& element : *array) {
    auto value = convert(element);
    if (!value) {
      throw ConfigError(fmt::format("{}: {}: expected an array of {}, got an element of type {}",
                                    source_location(element), dotted(config.path(), key),
                                    expected, type_name(element.type())));
    }
    values.push_back(*value);
  }
  return values;
}

}  // namespace

std::vector<std::int64_t> Config::get_int_list(std::string_view key) const {
  return get_list<std::int64_t>(*this, key, "integers",
                                [](const toml::node& n) { return n.value_exact<std::int64_t>(); });
}

std::vector<double> Config::get_double_list(std::string_view key) const {
  return get_list<double>(*this, key, "numbers", [](const toml::node& n) -> std::optional<double> {
    if (auto value = n.value_exact<double>()) return value;
    if (auto value = n.value_exact<std::int64_t>()) return static_cast<double>(*value);
    return std::nullopt;
  });
}

std::vector<std::string> Config::get_string_list(std::string_view key) const {
  return get_list<std::string>(*this, key, "strings",
                               [](const toml::node& n) { return n.value_exact<std::string>(); });
}

Config Config::table(std::string_view key) const {
  const toml::node& node = require(*this, key);
  const toml::table* table = node.as_table();
  if (!table) wrong_type(*this, key, node, "a table");
  auto impl = std::make_shared<Impl>();
  impl->root = impl_->root;
  impl->table = table;
  impl->path = dotted(impl_->path, key);
  impl->base_dir = impl_->base_dir;
  return Config(std::move(impl));
}

std::string Config::to_toml() const {
  std::ostringstream out;
  out << toml::toml_formatter(*impl_->table);
  return out.str();
}

}  // namespace ql
