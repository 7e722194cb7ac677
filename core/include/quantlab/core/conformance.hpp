// The conformance checks every plugin of a kind must pass: it is created from its defaults,
// refuses nothing it documents, and honours its interface's contract (shapes, dtypes, label
// ranges and determinism for problems; output shape, gradients and quantisable layers for
// topologies; every hook on a small network for algorithms). `qlsdk check` runs them.
//
//   PluginRegistry registry({"my_plugin.so"});
//   ConformanceReport report = check_conformance(registry, registry.plugins()[0], {});
//   for (const auto& line : report.lines) std::cout << line << "\n";
#pragma once

#include "quantlab/core/plugin_registry.hpp"

#include <string>
#include <vector>

namespace ql::core {

struct ConformanceReport {
  /// "ok   <check>" or "FAIL <check>: <why>", in order.
  std::vector<std::string> lines;
  int failures = 0;
  bool passed() const { return failures == 0; }
};

/// Runs the checks of `plugin`'s kind; `overrides` ("key=value") change its default options.
ConformanceReport check_conformance(PluginRegistry& registry, const PluginMetadata& plugin,
                                    const std::vector<std::string>& overrides);

}  // namespace ql::core
