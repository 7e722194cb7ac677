#include "quantlab/core/experiment_config.hpp"

#include "config_impl.hpp"
#include "quantlab/sdk/error.hpp"

#include <fmt/format.h>

#include <charconv>
#include <map>
#include <fstream>
#include <sstream>

namespace ql::core {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kHostSections[] = {"experiment", "storage", "training", "metrics", "run", "export"};
constexpr std::string_view kPluginSections[] = {"problem", "topology", "algorithm"};

std::string dotted(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : fmt::format("{}.{}", path, key);
}

std::vector<std::string> keys_of(const toml::table& table) {
  std::vector<std::string> keys;
  for (const auto& [key, node] : table) keys.emplace_back(key.str());
  return keys;
}

toml::table parse_toml(std::string_view text, std::string source) {
  try {
    return toml::parse(text, std::move(source));
  } catch (const toml::parse_error& e) {
    const auto& where = e.source();
    throw ConfigError(fmt::format("{}:{}:{}: {}", where.path ? *where.path : std::string("?"),
                                  where.begin.line, where.begin.column, e.description()));
  }
}

// Moves `node` into `table` under `key`. Moving, unlike copying, keeps the node's source
// position, so errors and Config::where() can name where a value came from.
void move_into(toml::table& table, std::string_view key, toml::node& node) {
  node.visit([&](auto& concrete) { table.insert_or_assign(key, std::move(concrete)); });
}

bool compatible(const toml::node& expected, const toml::node& given) {
  if (expected.type() == toml::node_type::floating_point) return given.is_number();
  return expected.type() == given.type();
}

// Checks `user` against `defaults` key by key and fills in every missing default.
void merge_with_defaults(toml::table& user, toml::table& defaults, const std::string& path) {
  for (auto& [key, node] : user) {
    toml::node* expected = defaults.get(key.str());
    const std::string name = dotted(path, key.str());
    if (!expected) {
      auto valid = keys_of(defaults);
      const std::string where = key.source().path ? fmt::format("{}:{}:{}", *key.source().path,
                                                                key.source().begin.line,
                                                                key.source().begin.column)
                                                  : source_location(node);
      throw ConfigError(fmt::format("{}: unknown key '{}'{}; valid keys here: {}", where, name, did_you_mean(key.str(), valid),
                                    valid.empty() ? "none" : fmt::format("{}", fmt::join(valid, ", "))));
    }
    if (!compatible(*expected, node)) {
      throw ConfigError(fmt::format("{}: {}: expected {}, got {}", source_location(node), name,
                                    type_name(expected->type()) == "float" ? "a number"
                                                                            : type_name(expected->type()),
                                    type_name(node.type())));
    }
    if (auto* table = node.as_table()) {
      merge_with_defaults(*table, *expected->as_table(), name);
    } else if (auto* array = node.as_array(); array && !expected->as_array()->empty()) {
      const toml::node& element_type = *expected->as_array()->get(0);
      for (const toml::node& element : *array) {
        if (!compatible(element_type, element)) {
          throw ConfigError(fmt::format("{}: {}: expected an array of {}, got an element of type {}",
                                        source_location(element), name,
                                        type_name(element_type.type()), type_name(element.type())));
        }
      }
    }
  }
  for (auto& [key, node] : defaults) {
    if (!user.contains(key.str())) move_into(user, key.str(), node);
  }
}

// Applies "a.b.c=value"; numeric parts index arrays of tables ("algorithm.0.bits=4"), and a
// part naming an algorithm plugin selects that [[algorithm]] ("algorithm.uniform.bits=4").
void apply_override(toml::table& document, const std::string& assignment) {
  const std::size_t equals = assignment.find('=');
  if (equals == std::string::npos || equals == 0) {
    throw ConfigError(fmt::format("--set {}: expected KEY=VALUE", assignment));
  }
  const std::string key = assignment.substr(0, equals);
  const std::string value_text = assignment.substr(equals + 1);
  const std::string source = "--set " + assignment;

  // A value that is not valid TOML is taken as a bare string (--set problem.data_dir=/x).
  toml::table parsed;
  try {
    parsed = toml::parse("value = " + value_text, source);
  } catch (const toml::parse_error&) {
    std::ostringstream quoted;
    quoted << toml::value<std::string>(value_text);
    parsed = parse_toml("value = " + quoted.str(), source);
  }

  std::vector<std::string> parts;
  std::stringstream stream(key);
  for (std::string part; std::getline(stream, part, '.');) {
    if (part.empty()) throw ConfigError(fmt::format("{}: empty part in key '{}'", source, key));
    parts.push_back(part);
  }
  toml::table* table = &document;
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
    toml::node* next = table->get(parts[i]);
    if (!next) next = &table->insert(parts[i], toml::table{}).first->second;
    if (auto* array = next->as_array()) {
      const std::string& selector = parts[++i];
      toml::node* chosen = nullptr;
      std::size_t index = 0;
      auto [end, error] = std::from_chars(selector.data(), selector.data() + selector.size(), index);
      if (error == std::errc() && end == selector.data() + selector.size()) {
        chosen = array->get(index);
      } else {
        for (toml::node& element : *array) {
          auto* entry = element.as_table();
          if (entry && entry->get("plugin") && entry->get("plugin")->value_or(std::string()) == selector) {
            chosen = &element;
          }
        }
      }
      if (!chosen || !chosen->is_table()) {
        throw ConfigError(fmt::format("{}: '{}' has no entry '{}'", source, parts[i - 1], selector));
      }
      next = chosen;
      if (i + 1 == parts.size()) throw ConfigError(fmt::format("{}: no key after '{}'", source, selector));
    }
    table = next->as_table();
    if (!table) throw ConfigError(fmt::format("{}: '{}' is not a table", source, parts[i]));
  }
  move_into(*table, parts.back(), *parsed.get("value"));
}

std::shared_ptr<const Config::Impl> view(const std::shared_ptr<const toml::table>& root,
                                         const toml::table* table, std::string path) {
  auto impl = std::make_shared<Config::Impl>();
  impl->root = root;
  impl->table = table;
  impl->path = std::move(path);
  return impl;
}

toml::table plugin_defaults(const PluginMetadata& plugin) {
  toml::table defaults = parse_toml(
      plugin.default_config, fmt::format("<defaults of {} plugin '{}'>", to_string(plugin.kind), plugin.name));
  defaults.insert("plugin", plugin.name);
  if (plugin.kind == PluginKind::topology) {
    // The host's keys of every [topology] (docs/weights.md): pretrained weights for the network.
    defaults.insert("weights", "");
    defaults.insert("weights_strict", true);
  }
  return defaults;
}

}  // namespace

namespace {

void flatten(const toml::table& table, const std::string& prefix, std::map<std::string, std::string>& out);

void flatten_node(const toml::node& node, const std::string& key, std::map<std::string, std::string>& out) {
  if (const toml::table* table = node.as_table()) {
    flatten(*table, key, out);
  } else if (const toml::array* array = node.as_array(); array && array->is_array_of_tables()) {
    for (std::size_t i = 0; i < array->size(); ++i) flatten_node(*array->get(i), fmt::format("{}.{}", key, i), out);
  } else {
    std::ostringstream text;
    node.visit([&](const auto& value) { text << value; });
    out[key] = text.str();
  }
}

void flatten(const toml::table& table, const std::string& prefix, std::map<std::string, std::string>& out) {
  for (const auto& [key, node] : table) {
    flatten_node(node, prefix.empty() ? std::string(key.str()) : prefix + "." + std::string(key.str()), out);
  }
}

std::map<std::string, std::string> flattened(const std::string& text) {
  std::map<std::string, std::string> values;
  try {
    flatten(toml::parse(text), "", values);
  } catch (const toml::parse_error& e) {
    throw Error(fmt::format("malformed resolved configuration: {}", e.description()));
  }
  return values;
}

}  // namespace

std::vector<std::string> config_differences(const std::string& before, const std::string& after) {
  const auto a = flattened(before), b = flattened(after);
  std::vector<std::string> differences;
  for (const auto& [key, value] : a) {
    const auto found = b.find(key);
    if (found == b.end()) differences.push_back(fmt::format("{}: {} -> (none)", key, value));
    else if (found->second != value) differences.push_back(fmt::format("{}: {} -> {}", key, value, found->second));
  }
  for (const auto& [key, value] : b) {
    if (!a.count(key)) differences.push_back(fmt::format("{}: (none) -> {}", key, value));
  }
  return differences;
}

Config plugin_options(const PluginMetadata& plugin, const std::vector<std::string>& overrides) {
  auto options = std::make_shared<toml::table>();
  for (const std::string& assignment : overrides) apply_override(*options, assignment);
  toml::table defaults = plugin_defaults(plugin);
  merge_with_defaults(*options, defaults, "");
  return Config(view(options, options.get(), ""));
}

ExperimentConfig ExperimentConfig::load(const fs::path& file,
                                        const std::vector<std::string>& overrides,
                                        const PluginRegistry& registry) {
  std::ifstream in(file);
  if (!in) throw ConfigError(fmt::format("{}: cannot open the experiment file", file.string()));
  std::stringstream text;
  text << in.rdbuf();
  auto document = std::make_shared<toml::table>(parse_toml(text.str(), file.string()));
  for (const std::string& assignment : overrides) apply_override(*document, assignment);

  // Top level: the host's sections and the plugin sections, nothing else.
  for (const auto& [key, node] : *document) {
    bool known = false;
    for (auto name : kHostSections) known |= key.str() == name;
    for (auto name : kPluginSections) known |= key.str() == name;
    if (!known) {
      std::vector<std::string> valid;
      for (auto name : kHostSections) valid.emplace_back(name);
      for (auto name : kPluginSections) valid.emplace_back(name);
      throw ConfigError(fmt::format("{}: unknown section '{}'{}; valid sections: {}",
                                    source_location(node), key.str(), did_you_mean(key.str(), valid),
                                    fmt::join(valid, ", ")));
    }
  }
  toml::table schema = parse_toml(host_schema(), "<host defaults>");
  for (auto name : kHostSections) {
    toml::node* node = document->get(name);
    if (!node) {
      move_into(*document, name, *schema.get(name));
      continue;
    }
    if (!node->is_table()) {
      throw ConfigError(fmt::format("{}: {}: expected a table, got {}", source_location(*node), name,
                                    type_name(node->type())));
    }
    merge_with_defaults(*node->as_table(), *schema.get(name)->as_table(), std::string(name));
  }

  // Plugin sections: the `plugin` key chooses the defaults the rest is checked against.
  struct Pending {
    PluginKind kind;
    toml::table* table;
    std::string path;
  };
  std::vector<Pending> pending;
  auto require_table = [&](std::string_view name, PluginKind kind) {
    toml::node* node = document->get(name);
    if (!node) {
      throw ConfigError(fmt::format("{}: missing [{}] section (it must name a {} plugin: "
                                    "plugin = \"...\")",
                                    file.string(), name, to_string(kind)));
    }
    if (!node->is_table()) {
      throw ConfigError(fmt::format("{}: {}: expected a table, got {}", source_location(*node), name,
                                    type_name(node->type())));
    }
    pending.push_back({kind, node->as_table(), std::string(name)});
  };
  require_table("problem", PluginKind::problem);
  require_table("topology", PluginKind::topology);
  if (toml::node* algorithms = document->get("algorithm")) {
    toml::array* array = algorithms->as_array();
    if (!array || !array->is_array_of_tables()) {
      throw ConfigError(fmt::format("{}: algorithm: expected [[algorithm]] tables",
                                    source_location(*algorithms)));
    }
    for (std::size_t i = 0; i < array->size(); ++i) {
      pending.push_back({PluginKind::algorithm, array->get(i)->as_table(),
                         fmt::format("algorithm[{}]", i)});
    }
  }

  ExperimentConfig config;
  config.file_ = file;
  for (Pending& entry : pending) {
    toml::node* plugin = entry.table->get("plugin");
    if (!plugin || !plugin->is_string()) {
      throw ConfigError(fmt::format("{}: {}: needs plugin = \"NAME\" naming a {} plugin",
                                    source_location(plugin ? *plugin : *entry.table), entry.path,
                                    to_string(entry.kind)));
    }
    const std::string name = plugin->value_or(std::string());
    const PluginMetadata* metadata = nullptr;
    try {
      metadata = &registry.find(entry.kind, name);
    } catch (const ConfigError& e) {
      throw ConfigError(fmt::format("{}: {}.plugin: {}", source_location(*plugin), entry.path, e.what()));
    }
    toml::table defaults = plugin_defaults(*metadata);
    merge_with_defaults(*entry.table, defaults, entry.path);
  }
  // Views are made only now: the document no longer changes.
  config.root_ = Config(view(document, document.get(), ""));
  for (const Pending& entry : pending) {
    config.plugins_.push_back({entry.kind, entry.table->get("plugin")->value_or(std::string()),
                               Config(view(document, entry.table, entry.path))});
  }
  return config;
}

Config ExperimentConfig::section(std::string_view name) const { return root_.table(name); }

std::vector<PluginChoice> ExperimentConfig::algorithms() const {
  return {plugins_.begin() + 2, plugins_.end()};
}

std::string ExperimentConfig::to_toml() const { return root_.to_toml(); }

}  // namespace ql::core
