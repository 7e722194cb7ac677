#include "quantlab/core/plugin_registry.hpp"

#include "quantlab/core/process.hpp"
#include "quantlab/sdk/error.hpp"

#include <boost/dll/shared_library.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ql::core {

namespace fs = std::filesystem;

struct PluginRegistry::Loaded {
  PluginMetadata metadata;
  boost::dll::shared_library library;
  const PluginDescriptor* descriptor = nullptr;
};

fs::path executable_dir() { return current_executable().parent_path(); }

std::vector<fs::path> default_search_path(const std::vector<fs::path>& extra_dirs) {
  std::vector<fs::path> path(extra_dirs);
  if (const char* env = std::getenv("QL_PLUGIN_PATH")) {
    std::string_view rest(env);
    while (!rest.empty()) {
      const std::size_t colon = rest.find(':');
      std::string_view entry = rest.substr(0, colon);
      if (!entry.empty()) path.emplace_back(entry);
      rest.remove_prefix(colon == std::string_view::npos ? rest.size() : colon + 1);
    }
  }
  if (const char* home = std::getenv("HOME")) {
    path.push_back(fs::path(home) / ".local/lib/quantlab/plugins");
  }
  const fs::path bin = executable_dir();
  if (!bin.empty()) {
    path.push_back(bin / QL_INSTALL_PLUGIN_DIR_FROM_BIN);
    // Running from the build tree: its freshly built plugins.
    std::error_code error;
    if (fs::equivalent(bin, QL_BUILD_BIN_DIR, error)) path.emplace_back(QL_BUILD_PLUGIN_DIR);
  }
  return path;
}

std::string written_by_others(const fs::path& file) {
  const uid_t me = geteuid();
  const gid_t my_group = getegid();
  auto check = [&](const fs::path& path, bool is_folder) -> std::string {
    struct stat info {};
    if (stat(path.c_str(), &info) != 0) return fmt::format("{} cannot be inspected", path.string());
    const char* what = is_folder ? "its folder " : "";
    if (info.st_uid != me && info.st_uid != 0) return fmt::format("{}{} is owned by user id {}", what, path.string(), info.st_uid);
    // A sticky folder (/tmp) lets nobody replace another user's file in it.
    const bool sticky = is_folder && (info.st_mode & S_ISVTX);
    if ((info.st_mode & S_IWOTH) && !sticky) return fmt::format("{}{} is writable by every user", what, path.string());
    if ((info.st_mode & S_IWGRP) && info.st_gid != my_group && !sticky) {
      return fmt::format("{}{} is writable by group id {}", what, path.string(), info.st_gid);
    }
    return "";
  };
  std::string reason = check(file, false);
  if (reason.empty()) reason = check(file.parent_path().empty() ? fs::path(".") : file.parent_path(), true);
  return reason;
}

PluginRegistry::PluginRegistry(std::vector<fs::path> search_path, PluginTrust trust)
    : search_path_(std::move(search_path)), trust_(trust) {
  for (const fs::path& entry : search_path_) {
    std::error_code error;
    if (fs::is_regular_file(entry, error)) {
      scan_file(entry, /*explicit_file=*/true);
      continue;
    }
    if (!fs::is_directory(entry, error)) continue;
    std::vector<fs::path> files;
    for (const auto& item : fs::directory_iterator(entry, error)) {
      if (item.path().extension() == ".so" && item.is_regular_file(error)) files.push_back(item.path());
    }
    std::sort(files.begin(), files.end());
    for (const fs::path& file : files) scan_file(file, /*explicit_file=*/false);
  }

  // Two files providing the same kind and name: neither is used.
  std::map<std::pair<PluginKind, std::string>, std::vector<std::string>> by_name;
  for (const PluginMetadata& p : plugins_) by_name[{p.kind, p.name}].push_back(p.path.string());
  for (const auto& [key, paths] : by_name) {
    if (paths.size() < 2) continue;
    refusals_.push_back(fmt::format("{} plugin '{}' is provided by more than one file: {}; "
                                    "none of them is used until only one remains",
                                    to_string(key.first), key.second,
                                    fmt::join(paths.begin(), paths.end(), " and ")));
    unusable_[key] = refusals_.back();
    plugins_.erase(std::remove_if(plugins_.begin(), plugins_.end(),
                                  [wanted = key](const PluginMetadata& p) {
                                    return p.kind == wanted.first && p.name == wanted.second;
                                  }),
                   plugins_.end());
  }
  std::sort(plugins_.begin(), plugins_.end(), [](const auto& a, const auto& b) {
    return std::tie(a.kind, a.name) < std::tie(b.kind, b.name);
  });
}

PluginRegistry::~PluginRegistry() = default;

void PluginRegistry::scan_file(const fs::path& file, bool explicit_file) {
  std::error_code error;
  fs::path canonical = fs::canonical(file, error);
  if (error) canonical = file;
  for (const PluginMetadata& p : plugins_) {
    if (fs::equivalent(p.path, canonical, error)) return;  // same file reached twice
  }
  PluginInspection found = inspect_plugin_file(canonical);
  if (found.status == PluginInspection::Status::plugin) {
    if (const std::string writer = written_by_others(canonical); !writer.empty()) {
      if (trust_ == PluginTrust::any_writer) {
        warnings_.push_back(fmt::format("{}: loaded although {} (QL_ALLOW_WRITABLE_PLUGINS is set)", canonical.string(), writer));
      } else {
        found.status = PluginInspection::Status::refused;
        found.reason = fmt::format("{}: refused, since loading a plugin runs its code and {}; fix the permissions "
                                   "(chmod go-w) or set QL_ALLOW_WRITABLE_PLUGINS=1",
                                   canonical.string(), writer);
      }
    }
  }
  switch (found.status) {
    case PluginInspection::Status::plugin: plugins_.push_back(std::move(found.metadata)); break;
    case PluginInspection::Status::refused:
      if (explicit_file) throw ConfigError(found.reason);
      refusals_.push_back(found.reason);
      if (!found.metadata.name.empty()) unusable_[{found.metadata.kind, found.metadata.name}] = found.reason;
      break;
    case PluginInspection::Status::not_plugin:
      if (explicit_file) throw ConfigError(found.reason);
      skipped_.push_back(found.reason);
      break;
  }
}

namespace {

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

}  // namespace

std::vector<std::string> closest_names(std::string_view name,
                                       const std::vector<std::string>& candidates) {
  const std::size_t limit = std::max<std::size_t>(2, name.size() / 3);
  std::vector<std::pair<std::size_t, std::string>> scored;
  for (const std::string& candidate : candidates) {
    const std::size_t distance = edit_distance(name, candidate);
    const bool prefix = !name.empty() && candidate.rfind(name, 0) == 0;
    if (distance <= limit || prefix) scored.emplace_back(prefix ? 1 : distance, candidate);
  }
  std::stable_sort(scored.begin(), scored.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> best;
  for (std::size_t i = 0; i < scored.size() && i < 3; ++i) best.push_back(scored[i].second);
  return best;
}

std::string did_you_mean(std::string_view name, const std::vector<std::string>& candidates) {
  auto best = closest_names(name, candidates);
  if (best.empty()) return "";
  return fmt::format(" (did you mean '{}'?)", fmt::join(best, "' or '"));
}

std::string PluginRegistry::searched() const {
  std::vector<std::string> places;
  for (const fs::path& place : search_path_) {
    std::error_code error;
    places.push_back(fs::exists(place, error) ? place.string() : place.string() + " (missing)");
  }
  return places.empty() ? std::string("nowhere (empty search path)") : fmt::format("{}", fmt::join(places, ", "));
}

const PluginMetadata& PluginRegistry::find(PluginKind kind, std::string_view name) const {
  std::vector<std::string> names;
  for (const PluginMetadata& p : plugins_) {
    if (p.kind != kind) continue;
    if (p.name == name) return p;
    names.push_back(p.name);
  }
  if (auto it = unusable_.find({kind, std::string(name)}); it != unusable_.end()) {
    throw ConfigError(fmt::format("{} plugin '{}' cannot be used: {}", to_string(kind), name, it->second));
  }
  throw ConfigError(fmt::format("no {} plugin named '{}'{}; available: {}; searched: {}", to_string(kind), name,
                                did_you_mean(name, names),
                                names.empty() ? "none" : fmt::format("{}", fmt::join(names, ", ")), searched()));
}

const PluginMetadata& PluginRegistry::find_any(std::string_view name) const {
  std::vector<std::string> names;
  for (const PluginMetadata& p : plugins_) {
    if (p.name == name) return p;
    names.push_back(p.name);
  }
  throw ConfigError(fmt::format("no plugin named '{}'{}; searched: {}", name, did_you_mean(name, names), searched()));
}

const PluginDescriptor& PluginRegistry::load(PluginKind kind, std::string_view name) {
  const PluginMetadata& metadata = find(kind, name);
  for (const auto& loaded : loaded_) {
    if (loaded->metadata.path == metadata.path) return *loaded->descriptor;
  }
  auto loaded = std::make_unique<Loaded>();
  loaded->metadata = metadata;
  try {
    // RTLD_NODELETE: plugins are never unloaded, even when the registry goes away, since
    // objects and static data of a plugin (torch modules, autograd nodes) may be referenced
    // until the process ends. Boost passes native dlopen flags through.
    const auto mode = static_cast<boost::dll::load_mode::type>(RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    loaded->library.load(metadata.path.string(), mode);
  } catch (const std::exception& e) {
    throw Error(fmt::format("{}: cannot be loaded: {}", metadata.path.string(), e.what()));
  }
  if (!loaded->library.has(kEntrySymbol)) {
    throw Error(fmt::format("{}: loaded, but '{}' is not found", metadata.path.string(), kEntrySymbol));
  }
  const auto& descriptor = loaded->library.get<const PluginDescriptor>(kEntrySymbol);
  // The runtime descriptor must say what the metadata blob said.
  std::vector<std::string> mismatches;
  if (descriptor.struct_size < sizeof(PluginDescriptor)) {
    mismatches.push_back(fmt::format("descriptor size {} < {}", descriptor.struct_size,
                                     sizeof(PluginDescriptor)));
  } else {
    auto check = [&](std::string_view what, std::string_view runtime, std::string_view blob) {
      if (runtime != blob) mismatches.push_back(fmt::format("{} '{}' vs '{}'", what, runtime, blob));
    };
    check("name", descriptor.name, metadata.name);
    check("version", descriptor.version, metadata.version);
    check("fingerprint", descriptor.fingerprint, metadata.fingerprint);
    check("kind", to_string(static_cast<PluginKind>(descriptor.kind)), to_string(metadata.kind));
    if (descriptor.abi_major != metadata.abi_major || descriptor.abi_minor != metadata.abi_minor) {
      mismatches.push_back(fmt::format("ABI {}.{} vs {}.{}", descriptor.abi_major,
                                       descriptor.abi_minor, metadata.abi_major, metadata.abi_minor));
    }
    if (!descriptor.create || !descriptor.destroy) mismatches.push_back("no factory functions");
  }
  if (!mismatches.empty()) {
    throw Error(fmt::format("{}: its descriptor disagrees with its metadata: {}",
                            metadata.path.string(), fmt::join(mismatches, "; ")));
  }
  loaded->descriptor = &descriptor;
  loaded_.push_back(std::move(loaded));
  return descriptor;
}

void* PluginRegistry::construct(const PluginDescriptor& descriptor, const Config& options) {
  PluginError error{};
  void* object = descriptor.create(&options, &error);
  if (object) return object;
  const std::string message = fmt::format("{} plugin '{}': {}",
                                          to_string(static_cast<PluginKind>(descriptor.kind)),
                                          descriptor.name,
                                          error.code ? error.message : "the factory returned nothing");
  if (error.code == 2) throw ConfigError(message);
  throw Error(message);
}

}  // namespace ql::core
