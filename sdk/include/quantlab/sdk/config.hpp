// A typed, read-only view of one table of the experiment file. Plugins get the view of their
// own table, already merged with their defaults and checked for unknown keys and types; they
// check ranges and choices as they read, and every error names file:line:column.
//
//   int64_t bits = options.get_int("bits", 1, 32);
//   Scheme scheme = options.get_enum<Scheme>("scheme", {{"quantifind", Scheme::quantifind}, {"symmetric", Scheme::symmetric}});
//   std::vector<int64_t> hidden = options.get_int_list("hidden");
#pragma once

#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ql {

class Config {
 public:
  /// The implementation (a parsed TOML document); only the host can make one.
  struct Impl;
  explicit Config(std::shared_ptr<const Impl> impl);
  Config(const Config&);
  Config& operator=(const Config&);
  ~Config();

  /// True if the table has `key`.
  bool has(std::string_view key) const;
  /// The keys of this table, in file order.
  std::vector<std::string> keys() const;

  /// Typed getters: throw ql::ConfigError naming the key and where it was set when the key is
  /// missing, has another type, or is outside [min, max].
  std::int64_t get_int(std::string_view key) const;
  std::int64_t get_int(std::string_view key, std::int64_t min, std::int64_t max) const;
  double get_double(std::string_view key) const;
  double get_double(std::string_view key, double min, double max) const;
  bool get_bool(std::string_view key) const;
  std::string get_string(std::string_view key) const;
  /// A string naming a file or folder. A relative path is resolved against the base folder the
  /// host gives this table: for [problem], the data root ([storage] data, $QL_DATA). "" stays "".
  std::filesystem::path get_path(std::string_view key) const;
  /// The folder relative paths of get_path() are resolved against ("" : the working directory).
  const std::filesystem::path& base_dir() const;
  /// The same table with relative paths resolved against `dir`.
  Config with_base_dir(std::filesystem::path dir) const;
  /// A string that must be one of `choices`.
  std::string get_choice(std::string_view key,
                         std::initializer_list<std::string_view> choices) const;
  /// A string that must be one of `choices`, as the enumerator it names: options are parsed
  /// once into typed values, never compared as strings later.
  template <typename Enum>
  Enum get_enum(std::string_view key, std::initializer_list<std::pair<std::string_view, Enum>> choices) const {
    std::vector<std::string_view> names;
    for (const auto& choice : choices) names.push_back(choice.first);
    const std::string chosen = get_choice_of(key, names);
    for (const auto& choice : choices) {
      if (choice.first == chosen) return choice.second;
    }
    return choices.begin()->second;  // unreachable: get_choice_of accepted one of the names
  }
  std::vector<std::int64_t> get_int_list(std::string_view key) const;
  std::vector<double> get_double_list(std::string_view key) const;
  std::vector<std::string> get_string_list(std::string_view key) const;
  /// A nested table.
  Config table(std::string_view key) const;

  /// "file:line:column" of `key` (or of this table when `key` is empty).
  std::string where(std::string_view key = {}) const;
  /// Dotted path of this table in the experiment file ("training.optimizer").
  const std::string& path() const;
  /// Builds a ConfigError message "where: path.key: what" for checks the getters cannot do.
  std::string error_message(std::string_view key, std::string_view what) const;
  /// The table as TOML text.
  std::string to_toml() const;

  const Impl& impl() const { return *impl_; }

 private:
  std::string get_choice_of(std::string_view key, const std::vector<std::string_view>& choices) const;
  std::shared_ptr<const Impl> impl_;
};

}  // namespace ql
