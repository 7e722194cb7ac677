// Regression end to end: the linear_map problem (a seeded random linear map, mean squared
// error) through training, evaluation, the uniform sweep, the unit record and the report, none
// of which may assume class targets; and the uniform plugin's layer selection on it.
#include "quantlab/core/metrics_log.hpp"
#include "quantlab/core/unit_record.hpp"
#include "support/test_support.hpp"

#include <gtest/gtest.h>

#include <fmt/format.h>
#include <torch/types.h>

#include <fstream>
#include <map>
#include <sstream>

namespace fs = std::filesystem;

namespace {

class QlhostRegressionTest : public ::testing::Test {
 protected:
  // Runs a linear_map experiment (64 -> 32, 4,000 samples) with `rest` appended; returns the
  // command's result. The unit is unit().
  ql::test::CommandResult run(const std::string& rest) {
    const std::string text = fmt::format(R"([experiment]
seed = 3
[storage]
logs = "{}"
[problem]
plugin = "linear_map"
inputs = 64
outputs = 32
train_samples = 4000
test_samples = 1000
noise = 1.0
[run]
threads = 2
{}
)",
                                         (dir_ / "logs").string(), rest);
    ql::test::write_text(dir_ / "exp.toml", text);
    return ql::test::run_qlhost("run " + ql::test::quoted((dir_ / "exp.toml").string()), dir_.path());
  }
  fs::path unit(int n = 1) const { return dir_ / "logs" / "linear_map" / "mlp" / fmt::format("exp{:04d}", n); }

  // The variants table as rows of cells, keyed by the variant's label.
  static std::map<std::string, std::map<std::string, std::string>> variants(const fs::path& csv) {
    std::ifstream in(csv);
    std::string line;
    std::getline(in, line);
    std::vector<std::string> columns;
    for (std::stringstream header(line); std::getline(header, line, ',');) columns.push_back(line);
    std::map<std::string, std::map<std::string, std::string>> rows;
    while (std::getline(in, line)) {
      std::stringstream row(line);
      std::map<std::string, std::string> cells;
      std::string cell;
      for (std::size_t c = 0; std::getline(row, cell, ','); ++c) cells[columns.at(c)] = cell;
      rows[cells["variant"]] = cells;
    }
    return rows;
  }

  ql::test::TempDir dir_;
};

constexpr char kLinearModel[] = R"([topology]
plugin = "mlp"
hidden = []
[training]
epochs = 15
batch_size = 64
[training.optimizer]
name = "adam"
lr = 0.02
[training.lr_schedule]
name = "cosine"
[[algorithm]]
plugin = "uniform"
bits = 8
min_bits = 2
max_bits = 8
)";

}  // namespace

// A linear model learns the map down to the noise floor (the targets' variance is 64, the
// noise's 1); 2-bit weights cost a large multiple of that loss and 8 bits almost nothing.
TEST_F(QlhostRegressionTest, ALinearModelLearnsTheMapAndTheSweepReportsLossRatios) {
  const auto result = run(kLinearModel);
  ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
  const ql::core::UnitRecord record = ql::core::read_unit_record(unit());
  ASSERT_EQ(record.folds.size(), 1u);
  const ql::core::FoldRecord& fold = record.folds[0];
  EXPECT_EQ(fold.best_metric, "valid/loss");  // best_metric = "auto" on a regression
  EXPECT_LT(fold.trained_top1, 0.0);          // not measured
  EXPECT_GT(fold.trained_loss, 0.8);          // the noise floor, 1.0 (minus what a fit of 4,000 samples overfits)
  EXPECT_LT(fold.trained_loss, 1.5);          // against 64 before training
  EXPECT_GT(fold.result_loss, fold.trained_loss);  // the kept network has 8-bit weights

  const auto rows = variants(unit() / "fold0" / "uniform_variants.csv");
  EXPECT_FALSE(rows.at("float").count("top1"));  // a regression's table has its loss alone
  EXPECT_GT(std::stod(rows.at("2 bits").at("loss_ratio")), 3.0);
  EXPECT_LT(std::stod(rows.at("8 bits").at("loss_ratio")), 1.05);
  EXPECT_GT(std::stod(rows.at("8 bits").at("loss_ratio")), 1.0);

  const ql::core::MetricsData metrics = ql::core::read_metrics_h5(unit() / "fold0" / "metrics.h5");
  EXPECT_TRUE(metrics.scalars.count("valid/loss"));
  EXPECT_FALSE(metrics.scalars.count("valid/top1"));
  EXPECT_FALSE(metrics.scalars.count("train/top1"));
  EXPECT_FALSE(fs::exists(unit() / "fold0" / "predictions.h5"));
  EXPECT_TRUE(fs::exists(unit() / "uniform_accuracy.png"));  // loss ratio against bits
  const std::string report = ql::test::read_text(unit() / "report.md");
  EXPECT_NE(report.find("test loss (trained)"), std::string::npos);
  EXPECT_NE(result.out.find("trained network on test: loss"), std::string::npos) << result.out;
  EXPECT_EQ(result.out.find("top1"), std::string::npos) << result.out;
}

// Quantifind's model, ReLU(Linear): it cannot give negative outputs, so about half of the
// targets' variance stays in the loss; the uniform plugin quantises only the layers `layers`
// names (the hidden layer here, the output layer untouched).
TEST_F(QlhostRegressionTest, UniformQuantisesOnlyTheLayersItIsGiven) {
  const auto result = run(R"([topology]
plugin = "mlp"
hidden = [48]
output_activation = "relu"
[training]
epochs = 2
[[algorithm]]
plugin = "uniform"
bits = 2
layers = ["fc*"]
sweep = false
)");
  ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
  const auto kept = ql::test::checkpoint_model(unit() / "fold0" / "checkpoints" / "result.pt");
  const auto trained = ql::test::checkpoint_model(unit() / "fold0" / "checkpoints" / "last.pt");
  EXPECT_LE(std::get<0>(at::_unique(kept.at("model/fc1.weight").flatten())).numel(), 4);  // 2 bits
  EXPECT_TRUE(kept.at("model/classifier.weight").equal(trained.at("model/classifier.weight")));
  const ql::core::UnitRecord record = ql::core::read_unit_record(unit());
  EXPECT_GT(record.folds[0].trained_loss, 20.0);  // ReLU outputs: about half the variance (64) is out of reach

  const auto none = run(R"([topology]
plugin = "mlp"
hidden = []
[[algorithm]]
plugin = "uniform"
layers = ["fc*"]
)");
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.err.find("layers = [fc*] names none of the network's weighted layers (classifier)"), std::string::npos)
      << none.err;
}

// Class losses and class metrics are refused for a regression, naming the key.
TEST_F(QlhostRegressionTest, AClassificationLossOnARegressionIsAConfigError) {
  const auto loss = run("[topology]\nplugin = \"mlp\"\n[training]\nloss = \"cross_entropy\"\n");
  EXPECT_NE(loss.exit_code, 0);
  EXPECT_NE(loss.err.find("training.loss"), std::string::npos) << loss.err;
  EXPECT_NE(loss.err.find("regression"), std::string::npos) << loss.err;
  const auto metric = run("[topology]\nplugin = \"mlp\"\n[training]\nbest_metric = \"valid/top1\"\n");
  EXPECT_NE(metric.exit_code, 0);
  EXPECT_NE(metric.err.find("training.best_metric"), std::string::npos) << metric.err;
  EXPECT_FALSE(fs::exists(unit()));  // refused before any folder is made
}
