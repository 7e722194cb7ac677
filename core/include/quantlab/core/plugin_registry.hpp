// The plugin registry: finds plugin files on the search path, lists them from their metadata
// alone, and loads (dlopen) only those an experiment uses. Loaded libraries stay loaded for
// the life of the process; plugin objects are destroyed through their own plugin's `destroy`.
//
//   PluginRegistry registry(default_search_path(extra_dirs));
//   auto problem = registry.create<ql::Problem>("mnist", options);
//   for (const PluginMetadata& p : registry.plugins()) list(p);
#pragma once

#include "quantlab/core/plugin_file.hpp"
#include "quantlab/sdk/config.hpp"

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace boost::dll {
class shared_library;
}

namespace ql::core {

/// A plugin object owned by the host, destroyed by the plugin that made it.
template <typename Interface>
using PluginPtr = std::unique_ptr<Interface, std::function<void(Interface*)>>;

/// The folder of the running executable (empty if /proc/self/exe cannot be read); the
/// install prefix is its parent.
std::filesystem::path executable_dir();

/// The search path in order: `extra_dirs` (--plugin-dir), QL_PLUGIN_PATH, the user directory
/// ~/.local/lib/quantlab/plugins, the install's plugin directory, the build tree's.
std::vector<std::filesystem::path> default_search_path(
    const std::vector<std::filesystem::path>& extra_dirs);

/// Whose plugin files the registry loads. Loading a plugin runs its code, so by default a file
/// that another user could have written is refused: one writable by others (or by a group
/// other than ours), owned by someone other than us or root, or in a folder that others may
/// write to (without the sticky bit) or that they own.
enum class PluginTrust {
  owner_only,  ///< refuse such files, naming the reason
  any_writer,  ///< load them, with a warning (qlhost: QL_ALLOW_WRITABLE_PLUGINS=1)
};

/// Why `file` could have been written by another user, or "" when it could not.
std::string written_by_others(const std::filesystem::path& file);

class PluginRegistry {
 public:
  /// Scans every directory of `search_path` (missing ones are skipped); explicit files in
  /// the path must be plugins. Throws ql::ConfigError for an explicit non-plugin file, or an
  /// explicit file refused by `trust`.
  explicit PluginRegistry(std::vector<std::filesystem::path> search_path,
                          PluginTrust trust = PluginTrust::owner_only);
  ~PluginRegistry();
  PluginRegistry(const PluginRegistry&) = delete;
  PluginRegistry& operator=(const PluginRegistry&) = delete;

  const std::vector<std::filesystem::path>& search_path() const { return search_path_; }
  /// Usable plugins, sorted by kind then name.
  const std::vector<PluginMetadata>& plugins() const { return plugins_; }
  /// One line for each refused file and each duplicate name.
  const std::vector<std::string>& refusals() const { return refusals_; }
  /// One line for each file skipped as not being a plugin (shown with --verbose).
  const std::vector<std::string>& skipped() const { return skipped_; }
  /// One line for each file others could have written, loaded under PluginTrust::any_writer.
  const std::vector<std::string>& warnings() const { return warnings_; }

  /// The plugin of `kind` called `name`; throws ql::ConfigError naming the closest names and
  /// the directories searched.
  const PluginMetadata& find(PluginKind kind, std::string_view name) const;
  /// Any plugin called `name` (for `plugins --show`).
  const PluginMetadata& find_any(std::string_view name) const;

  /// Loads the plugin and builds its object from its validated options.
  template <typename Interface>
  PluginPtr<Interface> create(std::string_view name, const Config& options) {
    const PluginDescriptor& descriptor = load(Interface::kKind, name);
    void* object = construct(descriptor, options);
    auto destroy = descriptor.destroy;
    return PluginPtr<Interface>(static_cast<Interface*>(object),
                                [destroy](Interface* p) { destroy(p); });
  }

  /// dlopens the plugin (once) and checks its runtime descriptor against its metadata.
  const PluginDescriptor& load(PluginKind kind, std::string_view name);

 private:
  void scan_file(const std::filesystem::path& file, bool explicit_file);
  /// The search path for messages, missing directories marked.
  std::string searched() const;
  void* construct(const PluginDescriptor& descriptor, const Config& options);

  struct Loaded;
  std::vector<std::filesystem::path> search_path_;
  std::vector<PluginMetadata> plugins_;
  std::vector<std::string> refusals_;
  /// Why a plugin that was found by kind and name cannot be used (duplicate, wrong ABI, ...).
  std::map<std::pair<PluginKind, std::string>, std::string> unusable_;
  std::vector<std::string> skipped_;
  std::vector<std::string> warnings_;
  PluginTrust trust_;
  std::vector<std::unique_ptr<Loaded>> loaded_;
};

/// Up to three of `candidates` closest to `name` by edit distance, best first.
std::vector<std::string> closest_names(std::string_view name,
                                       const std::vector<std::string>& candidates);
/// " (did you mean 'a' or 'b'?)" or "" when there is no close name.
std::string did_you_mean(std::string_view name, const std::vector<std::string>& candidates);

}  // namespace ql::core
