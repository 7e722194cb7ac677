#include "quantlab/sdk/plugin.hpp"

#include "quantlab/sdk/error.hpp"

#include <cstdio>
#include <exception>

namespace ql {

std::string_view to_string(PluginKind kind) {
  switch (kind) {
    case PluginKind::problem: return "problem";
    case PluginKind::topology: return "topology";
    case PluginKind::algorithm: return "algorithm";
  }
  return "unknown";
}

std::string_view build_fingerprint() { return QL_BUILD_FINGERPRINT; }

namespace detail {

void* create_guarded(void* (*construct)(const Config&), const Config* options,
                     PluginError* error) noexcept {
  auto fail = [error](int code, const char* message) -> void* {
    if (error) {
      error->code = code;
      std::snprintf(error->message, sizeof(error->message), "%s", message);
    }
    return nullptr;
  };
  if (!options) return fail(1, "no options given to the plugin factory");
  try {
    return construct(*options);
  } catch (const ConfigError& e) {
    return fail(2, e.what());
  } catch (const std::exception& e) {
    return fail(1, message_of(e).c_str());
  } catch (...) {
    return fail(1, "unknown exception");
  }
}

}  // namespace detail
}  // namespace ql
