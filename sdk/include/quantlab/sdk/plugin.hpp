// The plugin boundary: the one C descriptor every plugin exports, its build fingerprint, and
// the QL_PLUGIN macro that writes both the descriptor and the metadata blob the host reads
// without running plugin code.
//
//   class Uniform : public ql::Algorithm { public: explicit Uniform(const ql::Config&); ... };
//   constexpr char kOptions[] = "bits = 8  # bit depth of the kept result\n";
//   QL_PLUGIN(algorithm, "uniform", "0.1.0", "uniform bit-depth quantisation", kOptions, Uniform)
//
// The macro takes the ABI numbers, the section and the symbol from the definitions below, so
// raising QL_ABI_MAJOR changes what every plugin built afterwards claims.
#pragma once

#include "quantlab/sdk/build_info.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#define QL_DETAIL_STR2(x) #x
#define QL_DETAIL_STR(x) QL_DETAIL_STR2(x)

namespace ql {

class Config;

/// What a plugin provides; selects the interface its factory returns.
enum class PluginKind : std::uint32_t { problem = 1, topology = 2, algorithm = 3 };

/// Name of a kind as it appears in experiment files and listings ("problem", ...).
std::string_view to_string(PluginKind kind);

/// ABI of the descriptor and the interfaces behind it. A host accepts a plugin with the same
/// major and a minor no newer than its own. Macros, because QL_PLUGIN writes them into the
/// metadata blob as text at compile time; the constants below are the same numbers.
/// 2.0 (SDK 0.4.0): problems get a Log, Batch lost its mask, Context writes artefacts, layer
/// kinds are an enum.
/// 3.0 (SDK 0.6.0): Network::export_onnx (a new virtual function).
/// 4.0 (SDK 0.7.0): Quantizer::affine_grid (a new virtual function).
/// 5.0 (SDK 0.8.0): DatasetSpec::task and target_size (regression problems).
#define QL_ABI_MAJOR 5
#define QL_ABI_MINOR 0
/// The exported descriptor's symbol, the metadata section and the blob's first bytes.
#define QL_ENTRY_SYMBOL ql_plugin_v1
#define QL_METADATA_SECTION ".qlmeta"
#define QL_METADATA_MAGIC "QLMETA/1\n"

inline constexpr std::uint32_t kAbiMajor = QL_ABI_MAJOR;
inline constexpr std::uint32_t kAbiMinor = QL_ABI_MINOR;
inline constexpr const char* kEntrySymbol = QL_DETAIL_STR(QL_ENTRY_SYMBOL);
inline constexpr const char* kMetadataSection = QL_METADATA_SECTION;
inline constexpr std::string_view kMetadataMagic = QL_METADATA_MAGIC;

/// How a factory reports failure across the C boundary.
struct PluginError {
  /// 0: none, 1: run-time failure (ql::Error), 2: bad options (ql::ConfigError).
  int code;
  char message[2048];
};

/// The descriptor exported as QL_ENTRY_SYMBOL (`ql_plugin_v1`). Plain C data; fields are only ever appended,
/// and `struct_size` tells the host which fields a plugin has.
struct PluginDescriptor {
  std::uint32_t struct_size;
  std::uint32_t abi_major;
  std::uint32_t abi_minor;
  std::uint32_t kind;         ///< a PluginKind
  const char* fingerprint;    ///< see QL_BUILD_FINGERPRINT
  const char* name;
  const char* version;
  const char* summary;
  const char* default_config; ///< TOML text: every option with its default and documentation
  /// Builds the plugin's object from its validated options; returns the kind's interface
  /// (ql::Problem*, ql::Topology*, ql::Algorithm*) or nullptr with `error` filled in.
  void* (*create)(const Config* options, PluginError* error) noexcept;
  void (*destroy)(void* object) noexcept;
};

/// The fingerprint of the current build as a string literal.
std::string_view build_fingerprint();

namespace detail {

/// Concatenates string literals / constexpr char arrays into one NUL-terminated array at
/// compile time, so the metadata blob is a constant in its own section.
template <std::size_t... N>
constexpr auto concat(const char (&... parts)[N]) {
  std::array<char, (N + ... + 0) - sizeof...(N) + 1> out{};
  std::size_t pos = 0;
  auto append = [&](const char* part, std::size_t size) {
    for (std::size_t i = 0; i + 1 < size; ++i) out[pos++] = part[i];
  };
  (append(parts, N), ...);
  return out;
}

/// Runs the constructor of a plugin class, turning exceptions into a PluginError.
void* create_guarded(void* (*construct)(const Config&), const Config* options,
                     PluginError* error) noexcept;

}  // namespace detail
}  // namespace ql

// Predefining QL_COMPILER_ID (e.g. -DQL_COMPILER_ID='"gcc-0.0"') fakes another compiler;
// the loader tests do so to build a plugin the host must refuse.
#ifndef QL_COMPILER_ID
#if defined(__clang__)
#define QL_COMPILER_ID "clang-" QL_DETAIL_STR(__clang_major__) "." QL_DETAIL_STR(__clang_minor__)
#elif defined(__GNUC__)
#define QL_COMPILER_ID "gcc-" QL_DETAIL_STR(__GNUC__) "." QL_DETAIL_STR(__GNUC_MINOR__)
#else
#define QL_COMPILER_ID "unknown"
#endif
#endif

#ifdef _GLIBCXX_USE_CXX11_ABI
#define QL_CXX11_ABI QL_DETAIL_STR(_GLIBCXX_USE_CXX11_ABI)
#else
#define QL_CXX11_ABI "none"
#endif

/// Everything two binaries must share for C++ objects to cross between them.
#define QL_BUILD_FINGERPRINT                                                     \
  "sdk=" QL_SDK_VERSION ";compiler=" QL_COMPILER_ID ";cxx11abi=" QL_CXX11_ABI \
  ";torch=" QL_TORCH_VERSION ";device=" QL_DEVICE_KIND

/// Writes the plugin descriptor and its metadata blob. `kind` is problem, topology or
/// algorithm; `options` names a constexpr char array holding the default-config TOML text.
#define QL_PLUGIN(kind, name, version, summary, options, Class)                                      \
  QL_DETAIL_PLUGIN(QL_ABI_MAJOR, QL_ABI_MINOR, QL_BUILD_FINGERPRINT, kind, name, version, summary, options, \
                   Class)

/// The macro behind QL_PLUGIN with the ABI and fingerprint spelled out; only the loader
/// tests use it directly, to build deliberately mismatched plugins.
#define QL_DETAIL_PLUGIN(abi_major, abi_minor, fingerprint, kind, name, version, summary,   \
                         options, Class)                                                    \
  static_assert(Class::kKind == ::ql::PluginKind::kind,                                     \
                "QL_PLUGIN: the class does not implement the interface of this kind");      \
  namespace {                                                                               \
  [[gnu::used, gnu::section(QL_METADATA_SECTION)]] constexpr auto ql_plugin_metadata_ =     \
      ::ql::detail::concat(QL_METADATA_MAGIC                                                \
                           "abi=" QL_DETAIL_STR(abi_major) "." QL_DETAIL_STR(abi_minor) "\n" \
                           "kind=" #kind "\n"                                               \
                           "name=" name "\n"                                                \
                           "version=" version "\n"                                          \
                           "fingerprint=" fingerprint "\n"                                  \
                           "summary=" summary "\n"                                          \
                           "defaults:\n",                                                   \
                           options);                                                        \
  void* ql_plugin_construct_(const ::ql::Config& config) {                                  \
    return static_cast<typename Class::Interface*>(new Class(config));                      \
  }                                                                                         \
  void* ql_plugin_create_(const ::ql::Config* config, ::ql::PluginError* error) noexcept {  \
    return ::ql::detail::create_guarded(&ql_plugin_construct_, config, error);              \
  }                                                                                         \
  void ql_plugin_destroy_(void* object) noexcept {                                          \
    delete static_cast<typename Class::Interface*>(object);                                 \
  }                                                                                         \
  }                                                                                         \
  extern "C" [[gnu::visibility("default")]] const ::ql::PluginDescriptor QL_ENTRY_SYMBOL = { \
      sizeof(::ql::PluginDescriptor),                                                       \
      abi_major,                                                                            \
      abi_minor,                                                                            \
      static_cast<std::uint32_t>(::ql::PluginKind::kind),                                   \
      fingerprint,                                                                          \
      name,                                                                                 \
      version,                                                                              \
      summary,                                                                              \
      options,                                                                              \
      &ql_plugin_create_,                                                                   \
      &ql_plugin_destroy_};
