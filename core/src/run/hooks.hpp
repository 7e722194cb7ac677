// Calling into a plugin: whatever a hook throws becomes one line that names the plugin and
// the hook, so that a user knows whose code failed.
#pragma once

#include "quantlab/sdk/error.hpp"

#include <fmt/format.h>

#include <exception>
#include <string>
#include <string_view>

namespace ql::core::run {

/// A plugin's hook failed; the message names the plugin and the hook.
class HookFailure : public Error {
 public:
  using Error::Error;
};

/// Runs `hook` of `plugin`; a ConfigError stays one (exit code 2), anything else becomes a
/// HookFailure.
template <typename Hook>
decltype(auto) in_hook(const std::string& plugin, std::string_view hook, Hook&& run) {
  try {
    return run();
  } catch (const HookFailure&) {
    throw;
  } catch (const ConfigError& e) {
    throw ConfigError(fmt::format("plugin '{}' failed in {}: {}", plugin, hook, e.what()));
  } catch (const std::exception& e) {
    throw HookFailure(fmt::format("plugin '{}' failed in {}: {}", plugin, hook, message_of(e)));
  } catch (...) {
    throw HookFailure(
        fmt::format("plugin '{}' failed in {}: it threw something that is not a std::exception", plugin, hook));
  }
}

}  // namespace ql::core::run
