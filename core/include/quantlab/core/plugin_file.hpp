// Reading a candidate plugin file without running any of its code: the ELF structure, the
// exported entry symbol and the metadata blob in the `.qlmeta` section, and the ABI and
// fingerprint checks. What the host may dlopen is decided here.
//
//   PluginInspection found = inspect_plugin_file("plugins/mnist.so");
//   if (found.status == PluginInspection::Status::plugin) use(found.metadata);
//   else std::cerr << found.reason << "\n";
#pragma once

#include "quantlab/sdk/plugin.hpp"

#include <cstdint>
#include <filesystem>
#include <string>

namespace ql::core {

/// What a plugin says about itself in its metadata blob.
struct PluginMetadata {
  std::filesystem::path path;
  std::uint32_t abi_major = 0;
  std::uint32_t abi_minor = 0;
  PluginKind kind = PluginKind::problem;
  std::string name;
  std::string version;
  std::string fingerprint;
  std::string summary;
  std::string default_config;
};

struct [[nodiscard]] PluginInspection {
  enum class Status {
    plugin,      ///< a plugin this host can load; `metadata` is filled in
    not_plugin,  ///< not an ELF shared object, or one without QuantLab's entry symbol and blob
    refused,     ///< meant as a plugin but unusable (truncated, wrong ABI or fingerprint, ...)
  };
  Status status = Status::not_plugin;
  PluginMetadata metadata;
  /// One line naming the file, what was expected and what was found (empty for `plugin`).
  std::string reason;
};

/// Inspects `file` against this host's ABI and build fingerprint.
PluginInspection inspect_plugin_file(const std::filesystem::path& file);

/// Inspects `file` against the given ABI and fingerprint (what the loader tests vary).
PluginInspection inspect_plugin_file(const std::filesystem::path& file, std::uint32_t abi_major,
                                     std::uint32_t abi_minor, std::string_view fingerprint);

/// "compiler: expected gcc-12.2, found gcc-11.3; ..." — the fields two fingerprints differ in.
std::string fingerprint_difference(std::string_view expected, std::string_view found);

}  // namespace ql::core
