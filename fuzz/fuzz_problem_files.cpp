// The CIFAR-10 binary reader and the language-names reader, through their plugins: the input
// becomes one data file next to valid ones (the first byte picks the problem).
#include "fuzz_support.hpp"
#include "quantlab/core/experiment_config.hpp"
#include "quantlab/core/plugin_registry.hpp"
#include "quantlab/sdk/problem.hpp"

#include <fmt/format.h>
#include <torch/types.h>

namespace fs = std::filesystem;

namespace {

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static ql::core::PluginRegistry registry(ql::core::default_search_path({QL_FUZZ_PLUGIN_DIR}));
  if (size == 0) return 0;
  const std::string input(reinterpret_cast<const char*>(data + 1), size - 1);
  const bool cifar = data[0] & 1;
  const fs::path dir = ql::fuzz::scratch() / (cifar ? "cifar" : "names");
  fs::create_directories(dir);
  std::string option;
  if (cifar) {
    const std::string record = std::string(1, '\3') + std::string(3072, '\x80');
    for (const char* name : {"data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin",
                             "test_batch.bin"}) {
      write_bytes(dir / name, record + record);
    }
    write_bytes(dir / "data_batch_1.bin", input);
    option = "normalization=\"unit\"";
  } else {
    write_bytes(dir / "Valid.txt", "Anna\nBert\nCarla\nDora\n");
    write_bytes(dir / "Fuzzed.txt", input);
    option = (data[0] & 2) ? "encoding=\"codepoints\"" : "encoding=\"ascii\"";
  }
  ql::fuzz::expect_clean_failure([&] {
    const auto& plugin = registry.find(ql::PluginKind::problem, cifar ? "cifar10" : "language_names");
    auto problem = registry.create<ql::Problem>(
        plugin.name, ql::core::plugin_options(plugin, {fmt::format("data_dir=\"{}\"", dir.string()), option}));
    auto train = problem->dataset(ql::Split::train, ql::stderr_log());
    if (train && train->size() > 0) (void)train->get_batch(torch::arange(std::min<std::int64_t>(train->size(), 4)), 1, true);
  });
  return 0;
}
