// The experiment file: TOML parsing, the host schema and every plugin's options.
#include "fuzz_support.hpp"
#include "quantlab/core/experiment_config.hpp"
#include "quantlab/core/plugin_registry.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static ql::core::PluginRegistry registry(ql::core::default_search_path({QL_FUZZ_PLUGIN_DIR}));
  const auto file = ql::fuzz::write_input("exp.toml", data, size);
  ql::fuzz::expect_clean_failure([&] {
    const auto config = ql::core::ExperimentConfig::load(file, {}, registry);
    (void)config.to_toml();
  });
  return 0;
}
