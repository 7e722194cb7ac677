// The pipeline examples (docs/pipelines.md) on 2,000 Fashion-MNIST images for one epoch: each
// algorithm of the pipeline acted, and the kept network is what the pipeline promises.
#include "quantlab/core/metrics_log.hpp"
#include "quantlab/core/unit_record.hpp"
#include "support/test_support.hpp"

#include <gtest/gtest.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

namespace fs = std::filesystem;

namespace {

class QlhostPipelinesTest : public ::testing::Test {
 protected:
  // Runs examples/NAME.toml small; returns the unit's folder.
  fs::path run(const std::string& name, const std::vector<std::string>& sets) {
    std::string args = "run " + ql::test::quoted(fs::path(QL_TEST_SOURCE_DIR) / "examples" / (name + ".toml"));
    for (const std::string& set : std::vector<std::string>{"storage.logs=" + (dir_ / "logs").string(),
                                                           "problem.max_train_samples=2000",
                                                           "problem.max_test_samples=500", "training.epochs=1"}) {
      args += " --set " + ql::test::quoted(set);
    }
    for (const std::string& set : sets) args += " --set " + ql::test::quoted(set);
    const auto result = ql::test::run_qlhost(args, dir_.path());
    EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
    out_ = result.out + result.err;
    const fs::path unit = dir_ / "logs" / "mnist" / "mlp" / fmt::format("exp{:04d}", ++units_);
    EXPECT_EQ(ql::core::read_unit_record(unit).status, "done") << out_;
    return unit;
  }

  // The distinct values of a kept weight.
  static std::int64_t distinct_values(const fs::path& unit, const std::string& weight) {
    const auto model = ql::test::checkpoint_model(unit / "fold0/checkpoints/result.pt");
    return std::get<0>(at::_unique(model.at("model/" + weight).flatten())).numel();
  }

  ql::test::TempDir dir_;
  std::string out_;
  int units_ = 0;
};

}  // namespace

TEST_F(QlhostPipelinesTest, AlqGradientsWithAnaWeightsAndActivationsQuantiseTheWholeTraining) {
  ASSERT_TRUE(fs::exists("/usr/share/datasets/fashion-mnist")) << "make deps installs dataset-fashion-mnist";
  const fs::path unit = run("fashion_mnist_alq_ana", {"algorithm.nuqsgd.update_steps=1,2,3"});
  // ALQ refitted its levels after steps 0, 1, 2 and 3; every step's gradients were coded.
  const auto levels = ql::core::read_metrics_h5(unit / "fold0/metrics.h5").scalars["nuqsgd/level/7"];
  EXPECT_GE(levels.size(), 4u) << out_;
  EXPECT_NE(out_.find("bits/coord"), std::string::npos) << out_;
  // The kept network: ANA's ternary weights and ANA's activation quantisers.
  const auto quantizers = ql::test::checkpoint_quantizers(unit / "fold0/checkpoints/result.pt");
  for (const char* weight : {"fc1.weight", "fc2.weight", "classifier.weight"}) {
    ASSERT_TRUE(quantizers.count(weight)) << weight;
    EXPECT_EQ(quantizers.at(weight), "ana 3 levels") << weight;
    EXPECT_LE(distinct_values(unit, weight), 3) << weight;
  }
  for (const char* activation : {"act1.output", "act2.output"}) {
    ASSERT_TRUE(quantizers.count(activation)) << activation << " in " << fmt::format("{}", fmt::join(quantizers, "; "));
    EXPECT_EQ(quantizers.at(activation), "ana 3 levels") << activation;
  }
}

TEST_F(QlhostPipelinesTest, AnaActivationsThenGpfqWeightsKeepATernaryNetwork) {
  ASSERT_TRUE(fs::exists("/usr/share/datasets/fashion-mnist")) << "make deps installs dataset-fashion-mnist";
  const fs::path unit = run("fashion_mnist_ana_gpfq", {"algorithm.greedy.calibration_samples=500",
                                                       "algorithm.greedy.sweep_bits=[1.584962500721156]",
                                                       "algorithm.greedy.sweep_alphabet_scalars=[2.0]"});
  const auto quantizers = ql::test::checkpoint_quantizers(unit / "fold0/checkpoints/result.pt");
  for (const char* weight : {"fc1.weight", "fc2.weight", "classifier.weight"}) {
    ASSERT_TRUE(quantizers.count(weight)) << weight << "\n" << out_;
    EXPECT_EQ(quantizers.at(weight).rfind("greedy gpfq 1.58 bits C=2", 0), 0u) << quantizers.at(weight);
    EXPECT_LE(distinct_values(unit, weight), 3) << weight;
  }
  for (const char* activation : {"act1.output", "act2.output"}) {
    ASSERT_TRUE(quantizers.count(activation)) << activation << " in " << fmt::format("{}", fmt::join(quantizers, "; "));
    EXPECT_EQ(quantizers.at(activation), "ana 3 levels") << activation;
  }
  // ANA's network was trained with float weights: GPFQ changed what it computes.
  const ql::core::UnitRecord record = ql::core::read_unit_record(unit);
  EXPECT_NE(record.folds.at(0).trained_top1, record.folds.at(0).result_top1);
}
