// Every bundled plugin passes the conformance checks of its kind; the checks catch a broken one.
#include "quantlab/core/conformance.hpp"
#include "support/test_support.hpp"

#include <gtest/gtest.h>
#include <fmt/format.h>

namespace fs = std::filesystem;

namespace {

std::string joined(const ql::core::ConformanceReport& report) { return fmt::format("{}", fmt::join(report.lines, "\n")); }

class ConformanceTest : public ::testing::Test {
 protected:
  ConformanceTest() : registry_(std::vector<fs::path>{QL_TEST_PLUGIN_DIR}) {}
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
