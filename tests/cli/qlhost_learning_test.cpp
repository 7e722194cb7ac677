// Learning on real data, where learning is the property under test: Fashion-MNIST subsets
// (Debian's dataset-fashion-mnist, installed by `make deps`), with thresholds between what a
// correct and a broken implementation reach. A quantiser that ignored its slot would keep 2
// bits as good as float; a biased or broken gradient codec would fall behind full precision.
#include "quantlab/core/unit_record.hpp"
#include "support/test_support.hpp"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <fstream>
#include <map>
#include <sstream>

namespace fs = std::filesystem;

namespace {

class QlhostLearningTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists("/usr/share/datasets/fashion-mnist")) GTEST_FAIL() << "make deps installs dataset-fashion-mnist";
  }

  // Runs `experiment` (TOML text after a common head: 6,000 training and 2,000 test images of
  // Fashion-MNIST, an MLP 784-128-10); returns the unit's folder.
  fs::path run(const std::string& name, const std::string& experiment) {
    const std::string head = fmt::format(R"([experiment]
seed = 4
[storage]
logs = "{}"
[problem]
plugin = "mnist"
max_train_samples = 6000
max_test_samples = 2000
[topology]
plugin = "mlp"
hidden = [128]
[run]
threads = 2
)",
                                         (dir_ / "logs").string());
    ql::test::write_text(dir_ / (name + ".toml"), head + experiment);
    const auto result = ql::test::run_qlhost("run " + ql::test::quoted((dir_ / (name + ".toml")).string()), dir_.path());
    EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
    out_ = result.out;
    return dir_ / "logs" / "mnist" / "mlp" / fmt::format("exp{:04d}", ++units_);
  }

  struct Scores {
    double top1, loss_ratio;
  };
  // Each row of a variants table: label -> test top-1 and loss over the float network's.
  static std::map<std::string, Scores> variants(const fs::path& csv) {
    std::map<std::string, Scores> top1;
    std::ifstream in(csv);
    std::string line;
    std::getline(in, line);
    for (std::vector<std::string> cells; std::getline(in, line); cells.clear()) {
      std::stringstream row(line);
      for (std::string cell; std::getline(row, cell, ',');) cells.push_back(cell);
      // ..., loss, top1, top5, loss_ratio, top1_ratio
      top1[cells.at(0)] = {std::stod(cells.at(cells.size() - 4)), std::stod(cells.at(cells.size() - 2))};
    }
    return top1;
  }

  ql::test::TempDir dir_;
  std::string out_;
  int units_ = 0;
};

}  // namespace

// The bit-depth sweep on a trained network: 2-bit weights cost accuracy, 8 bits do not.
TEST_F(QlhostLearningTest, UniformTwoBitsCostAccuracyAndEightBitsDoNot) {
  const fs::path unit = run("uniform", R"([training]
epochs = 2
[[algorithm]]
plugin = "uniform"
bits = 8
min_bits = 2
max_bits = 8
)");
  // Measured here: float 82.00 %; 2 bits 79.55 % at 1.163x the loss; 8 bits 82.10 % at 1.0001x.
  const auto scores = variants(unit / "fold0/uniform_variants.csv");
  ASSERT_TRUE(scores.count("float") && scores.count("2 bits") && scores.count("8 bits")) << out_;
  const Scores float_net = scores.at("float"), two = scores.at("2 bits"), eight = scores.at("8 bits");
  EXPECT_GT(float_net.top1, 0.78) << out_;
  EXPECT_GT(two.loss_ratio, 1.08) << out_;
  EXPECT_LT(two.top1, float_net.top1 - 0.01) << out_;
  EXPECT_LT(eight.loss_ratio, 1.005) << out_;
  EXPECT_GT(eight.top1, float_net.top1 - 0.005) << out_;
  const ql::core::UnitRecord record = ql::core::read_unit_record(unit);
  EXPECT_NEAR(record.folds.at(0).result_top1, eight.top1, 1e-9);
}

// Gradients through a 4-bit QSGD codec (4 simulated workers) learn as full-precision ones do,
// on the same data order and initial weights.
TEST_F(QlhostLearningTest, QsgdGradientsLearnAsFullPrecisionOnes) {
  const std::string training = R"([training]
epochs = 2
batch_size = 16
simulated_workers = 4
[training.optimizer]
name = "sgd"
lr = 0.05
momentum = 0.9
[[algorithm]]
plugin = "nuqsgd"
bucket_size = 512
)";
  const double full = ql::core::read_unit_record(run("none", training + "scheme = \"none\"\n")).folds.at(0).trained_top1;
  const double qsgd = ql::core::read_unit_record(run("qsgd", training + "scheme = \"qsgd\"\nbits = 4\n")).folds.at(0).trained_top1;
  EXPECT_GT(full, 0.78) << out_;
  EXPECT_GT(qsgd, full - 0.02) << out_;
}
