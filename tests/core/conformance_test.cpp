// Every bundled plugin passes the conformance checks of its kind; the checks catch a broken one.
#include "quantlab/core/conformance.hpp"
#include "support/test_support.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <fmt/format.h>

namespace fs = std::filesystem;

namespace {

std::string joined(const ql::core::ConformanceReport& report) { return fmt::format("{}", fmt::join(report.lines, "\n")); }

class ConformanceTest : public ::testing::Test {
 protected:
  ConformanceTest() : registry_(std::vector<fs::path>{QL_TEST_PLUGIN_DIR, fs::path(QL_TEST_FIXTURE_DIR) / "flawed"}) {}
  ql::core::ConformanceReport check(const std::string& name, const std::vector<std::string>& overrides = {}) {
    return ql::core::check_conformance(registry_, registry_.find_any(name), overrides);
  }
  ql::test::TempDir dir_;
  ql::core::PluginRegistry registry_;
};

}  // namespace

TEST_F(ConformanceTest, MnistPasses) {
  ql::test::write_idx_dataset(dir_.path(), 200, 50, 8, 4, /*gzip=*/false);
  const auto report = check("mnist", {"data_dir=" + dir_.path().string(), "image_size=[8, 8]", "classes=4"});
  EXPECT_TRUE(report.passed()) << joined(report);
  EXPECT_GE(report.lines.size(), 15u) << joined(report);
}

TEST_F(ConformanceTest, MlpPasses) {
  const auto report = check("mlp");
  EXPECT_TRUE(report.passed()) << joined(report);
}

TEST_F(ConformanceTest, UniformPassesWithEveryScheme) {
  for (const char* scheme : {"quantifind", "symmetric", "asymmetric"}) {
    const auto report = check("uniform", {fmt::format("scheme={}", scheme), "quantize_inputs=true", "parameters=all"});
    EXPECT_TRUE(report.passed()) << scheme << "\n" << joined(report);
  }
}

TEST_F(ConformanceTest, GreedyPassesWithBothMethods) {
  for (const char* method : {"gpfq", "msq"}) {
    const auto report = check("greedy", {fmt::format("method={}", method), "calibration_samples=16",
                                         "sweep_alphabet_scalars=[2.0, 3.0]", "export=false"});
    EXPECT_TRUE(report.passed()) << method << "\n" << joined(report);
  }
}

TEST_F(ConformanceTest, MissingDataIsReportedAsAFailure) {
  const auto report = check("mnist", {"data_dir=" + (dir_ / "nothing here").string()});
  EXPECT_FALSE(report.passed());
  EXPECT_NE(joined(report).find("FAIL has a non-empty training split"), std::string::npos) << joined(report);
}

TEST_F(ConformanceTest, UnknownOptionIsReportedAsAFailure) {
  const auto report = check("mlp", {"hiden=[3]"});
  EXPECT_FALSE(report.passed());
  EXPECT_NE(joined(report).find("did you mean 'hidden'"), std::string::npos) << joined(report);
}

TEST_F(ConformanceTest, LinearClassifierMlpPasses) {
  // No hidden layer, so no activation, but still a quantisable Linear.
  const auto report = check("mlp", {"hidden=[]"});
  EXPECT_TRUE(report.passed()) << joined(report);
}

namespace {

// CIFAR-10's binary records (label byte, 3072 pixel bytes) for a tiny set.
std::vector<std::uint8_t> cifar_records(int count) {
  std::vector<std::uint8_t> bytes;
  for (int i = 0; i < count; ++i) {
    bytes.push_back(static_cast<std::uint8_t>(i % 10));
    for (int p = 0; p < 3072; ++p) bytes.push_back(static_cast<std::uint8_t>((p * 7 + i * 13) % 256));
  }
  return bytes;
}

}  // namespace

// Every bundled plugin passes its kind's checks (a new plugin must join this table). Data sets
// are small files written here in their official formats.
TEST_F(ConformanceTest, EveryBundledPluginPasses) {
  ql::test::write_idx_dataset(dir_ / "mnist", 200, 50, 8, 4, /*gzip=*/false);
  for (int b = 1; b <= 5; ++b) ql::test::write_bytes(dir_ / fmt::format("cifar/data_batch_{}.bin", b), cifar_records(10));
  ql::test::write_bytes(dir_ / "cifar/test_batch.bin", cifar_records(10));
  ql::test::write_text(dir_ / "names/German.txt", "Bauer\nFischer\nKoch\nMeyer\nSchulz\nWagner\nWeber\nBecker\n");
  ql::test::write_text(dir_ / "names/French.txt", "Bernard\nDubois\nDurand\nLefebvre\nMartin\nMoreau\nPetit\nRoux\n");
  const auto tree = ql::test::run_command(fmt::format("{} {}/tests/weights/make_imagenet_tree.py {} 3 4 3 2>&1", QL_TEST_PYTHON,
                                                      QL_TEST_SOURCE_DIR, ql::test::quoted((dir_ / "imagenet").string())));
  ASSERT_EQ(tree.exit_code, 0) << tree.out;
  // Every scheme, with buckets smaller than the probe gradient so that all of it is quantised.
  std::vector<std::vector<std::string>> nuqsgd_schemes;
  for (const char* scheme : {"nuq", "qsgd", "qsgdinf", "trn", "alq", "alq_n", "amq", "amq_n", "none"}) {
    nuqsgd_schemes.push_back({fmt::format("scheme=\"{}\"", scheme), "bucket_size=64"});
  }
  const std::map<std::string, std::vector<std::vector<std::string>>> settings = {
      {"mnist", {{"data_dir=" + (dir_ / "mnist").string(), "image_size=[8, 8]", "classes=4"}}},
      {"cifar10", {{"data_dir=" + (dir_ / "cifar").string()}}},
      {"language_names", {{"data_dir=" + (dir_ / "names").string()}}},
      {"linear_map", {{"inputs=16", "outputs=8", "train_samples=64", "test_samples=16"}, {"noise=0.5", "train_samples=32"}}},
      {"ilsvrc12", {{"data_dir=" + (dir_ / "imagenet").string(), "val_labels=" + (dir_ / "imagenet/val_labels.txt").string(),
                     "classes=3", "crop=32", "resize=36", "workers=1"}}},
      {"mlp", {{}}}, {"convnet", {{}}}, {"resnet", {{}}}, {"vgg", {{}}}, {"alexnet", {{}}}, {"transformer", {{}}},
      {"uniform", {{}}},
      {"greedy", {{"calibration_samples=16", "sweep_alphabet_scalars=[2.0]", "export=false"}}},
      {"ana", {{}}},
      {"nuqsgd", nuqsgd_schemes},
      {"fixture_flawed", {{}}},
  };
  for (const ql::core::PluginMetadata& plugin : registry_.plugins()) {
    ASSERT_TRUE(settings.count(plugin.name)) << plugin.name << ": add the bundled plugin to this table";
    for (const auto& overrides : settings.at(plugin.name)) {
      const auto report = check(plugin.name, overrides);
      EXPECT_TRUE(report.passed()) << plugin.name << " " << fmt::format("{}", fmt::join(overrides, " ")) << "\n" << joined(report);
    }
  }
}

// Each algorithm check catches the flaw it is for, on a fixture with exactly that flaw: it is
// the first check to fail (later ones may fail too, on the network the flaw broke).
TEST_F(ConformanceTest, EachAlgorithmCheckFailsOnAPluginWithItsFlaw) {
  const std::vector<std::pair<std::string, std::string>> flaws = {
      {"state_bytes", "FAIL state saves and loads back the same bytes"},
      {"state_lost", "FAIL loaded state gives the same network behaviour"},
      {"dtype", "FAIL epoch and step hooks keep a working network: fc1.weight went from [12, 16] Float on cpu to [12, 16] Double"},
      {"biased_codec", "FAIL decode(encode(g)) is unbiased: chi-squared"},
      {"unseeded_codec", "FAIL encodings are a function of the seed"},
  };
  for (const auto& [flaw, failure] : flaws) {
    const auto report = check("fixture_flawed", {"flaw=\"" + flaw + "\""});
    const auto first = std::find_if(report.lines.begin(), report.lines.end(),
                                    [](const std::string& line) { return line.rfind("FAIL", 0) == 0; });
    ASSERT_NE(first, report.lines.end()) << flaw << "\n" << joined(report);
    EXPECT_EQ(first->rfind(failure, 0), 0u) << flaw << "\n" << joined(report);
  }
}
