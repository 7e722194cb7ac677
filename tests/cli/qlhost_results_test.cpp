// Results units end to end with real qlhost processes: kill and resume, stop by signal, folds,
// sweeps, listings, and the metrics files read by independent readers.
#include "quantlab/core/process.hpp"
#include "quantlab/core/unit_record.hpp"
#include "support/test_support.hpp"

#include <gtest/gtest.h>

#include <fmt/format.h>
#include <torch/types.h>

#include <chrono>
#include <csignal>
#include <thread>

namespace fs = std::filesystem;
using ql::test::run_command;
using ql::test::run_qlhost;

namespace {

class QlhostResultsTest : public ::testing::Test {
 protected:
  QlhostResultsTest() {
    ql::test::write_idx_dataset(dir_ / "data", 2400, 100, 28, 4, /*gzip=*/false);
    ql::test::write_text(dir_ / "exp.toml", fmt::format(R"([experiment]
seed = 11
[storage]
logs = "logs"
data = "."
[problem]
plugin = "mnist"
data_dir = "data"
image_size = [28, 28]
classes = 4
[topology]
plugin = "mlp"
hidden = [512, 512]
dropout = 0.25
[training]
epochs = 3
batch_size = 16
checkpoint_every_steps = 7
[run]
threads = 1
deterministic = true
)"));
  }

  std::string run_args(const std::string& extra = "") const {
    return fmt::format("run {} {}", ql::test::quoted((dir_ / "exp.toml").string()), extra);
  }

  // Starts `qlhost run` as a child process (output in log), with HOME pointing at the test folder.
  pid_t start(const std::vector<std::string>& extra, const fs::path& log) const {
    ::setenv("HOME", dir_.path().c_str(), 1);
    ::setenv("QL_PLUGIN_PATH", "", 1);
    std::vector<std::string> argv{QL_TEST_QLHOST, "run", (dir_ / "exp.toml").string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return ql::core::spawn(argv, log);
  }

  // Waits until the unit's record says at least `steps` optimiser steps are checkpointed.
  static void wait_for_steps(const fs::path& unit, std::int64_t steps) {
    if (!ql::test::wait_for_checkpointed_steps(unit, steps)) FAIL() << "the run did not reach step " << steps;
  }

  static void expect_same_weights(const fs::path& a, const fs::path& b) {
    const auto ta = ql::test::checkpoint_model(a), tb = ql::test::checkpoint_model(b);
    ASSERT_FALSE(ta.empty());
    ASSERT_EQ(ta.size(), tb.size());
    for (const auto& [key, value] : ta) {
      ASSERT_TRUE(tb.count(key)) << key;
      EXPECT_TRUE(torch::equal(value, tb.at(key))) << key << " differs between " << a << " and " << b;
    }
  }

  static std::string python_check(const fs::path& fold) {
    const auto result = run_command(fmt::format("/usr/bin/python3 {} {}",
                                                ql::test::quoted(QL_TEST_SOURCE_DIR "/tests/support/check_results.py"),
                                                ql::test::quoted(fold.string())));
    EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
    return result.out;
  }

  ql::test::TempDir dir_;
};

}  // namespace

// bad-input: a run killed with SIGKILL, or stopped with SIGINT | listed as `killed`; SIGINT: a checkpoint, `interrupted: stopped by signal 2 …`; `--resume` ends with bit-identical weights; a done unit: `already done` | 137 / 130, then 0
TEST_F(QlhostResultsTest, KilledOrStoppedRunsResumeToBitIdenticalWeights) {
  const auto reference = run_qlhost(run_args(), dir_.path());
  ASSERT_EQ(reference.exit_code, 0) << reference.out << reference.err;
  const fs::path reference_unit = dir_ / "logs/mnist/mlp/exp0001";

  // SIGKILL in the middle of the second epoch (135 steps an epoch), then resume.
  const fs::path killed = dir_ / "logs/mnist/mlp/exp0002";
  const pid_t child = start({}, dir_ / "killed.log");
  wait_for_steps(killed, 180);
  ::kill(child, SIGKILL);
  EXPECT_EQ(ql::core::wait_for(child), 128 + SIGKILL);
  EXPECT_EQ(ql::core::read_unit_record(killed).live_status(), "killed");
  const auto resumed = run_qlhost(run_args("--resume"), dir_.path());
  ASSERT_EQ(resumed.exit_code, 0) << resumed.out << resumed.err;
  EXPECT_NE(resumed.out.find("resuming at epoch 2 batch "), std::string::npos) << resumed.out;
  expect_same_weights(reference_unit / "fold0/checkpoints/last.pt", killed / "fold0/checkpoints/last.pt");
  expect_same_weights(reference_unit / "fold0/checkpoints/best.pt", killed / "fold0/checkpoints/best.pt");
  const auto record = ql::core::read_unit_record(killed);
  EXPECT_EQ(record.status, "done");
  EXPECT_EQ(record.resumes, 1);
  // The resumed metrics tell the same story as the uninterrupted ones, and outside readers
  // agree with each other (TensorBoard drops the killed attempt's events after the restart).
  const std::string reference_series = python_check(reference_unit / "fold0");
  const std::string resumed_series = python_check(killed / "fold0");
  EXPECT_EQ(reference_series.substr(reference_series.find("scalar train/loss ")),
            resumed_series.substr(resumed_series.find("scalar train/loss ")));
  EXPECT_NE(resumed_series.find("restarts ["), std::string::npos);

  // SIGINT: a checkpoint, status "interrupted", exit 130; the resume finishes the same way.
  const fs::path stopped = dir_ / "logs/mnist/mlp/exp0003";
  const pid_t second = start({}, dir_ / "stopped.log");
  wait_for_steps(stopped, 60);
  ::kill(second, SIGINT);
  EXPECT_EQ(ql::core::wait_for(second), 130) << ql::test::read_text(dir_ / "stopped.log");
  EXPECT_NE(ql::test::read_text(dir_ / "stopped.log").find("interrupted: stopped by signal 2"), std::string::npos);
  EXPECT_EQ(ql::core::read_unit_record(stopped).status, "interrupted");
  const auto finished = run_qlhost(run_args("--resume exp0003"), dir_.path());
  ASSERT_EQ(finished.exit_code, 0) << finished.out << finished.err;
  expect_same_weights(reference_unit / "fold0/checkpoints/last.pt", stopped / "fold0/checkpoints/last.pt");

  // A finished unit is not resumed again; another configuration is refused.
  const auto again = run_qlhost(run_args("--resume exp0003"), dir_.path());
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("already done"), std::string::npos) << again.err;
}

// bad-input: `--resume` with a changed configuration, or of a unit that does not exist | `… was run with another configuration (training.optimizer.lr: 0.001 -> 0.5) …`; `… exp0042 does not exist` | 2; 1
TEST_F(QlhostResultsTest, ResumeRefusesAnotherConfiguration) {
  const pid_t child = start({"--set", "training.epochs=1"}, dir_ / "run.log");
  wait_for_steps(dir_ / "logs/mnist/mlp/exp0001", 20);
  ::kill(child, SIGKILL);
  ql::core::wait_for(child);
  const auto other = run_qlhost(run_args("--set training.epochs=1 --set training.optimizer.lr=0.5 --resume"),
                                dir_.path());
  EXPECT_EQ(other.exit_code, 2);
  EXPECT_NE(other.err.find("training.optimizer.lr: 0.001 -> 0.5"), std::string::npos) << other.err;
  const auto missing = run_qlhost(run_args("--resume exp0042"), dir_.path());
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("exp0042 does not exist"), std::string::npos) << missing.err;
}

TEST_F(QlhostResultsTest, TwoRunsStartedTogetherGetDifferentUnits) {
  const std::string one = fmt::format("HOME={} QL_PLUGIN_PATH= {} {} --set training.epochs=0 >/dev/null 2>&1",
                                      ql::test::quoted(dir_.path().string()), ql::test::quoted(QL_TEST_QLHOST),
                                      run_args());
  const auto both = run_command(fmt::format("({0}) & ({0}) & wait", one));
  EXPECT_EQ(both.exit_code, 0);
  EXPECT_TRUE(fs::exists(dir_ / "logs/mnist/mlp/exp0001/unit.toml"));
  EXPECT_TRUE(fs::exists(dir_ / "logs/mnist/mlp/exp0002/unit.toml"));
  EXPECT_FALSE(fs::exists(dir_ / "logs/mnist/mlp/exp0003"));
}

TEST_F(QlhostResultsTest, FoldsRunOnePerFoldAndReportMeanAndStd) {
  const auto result = run_qlhost(
      run_args("--set training.folds=3 --set training.epochs=1 --set training.checkpoint_every_steps=0"), dir_.path());
  ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
  const fs::path unit = dir_ / "logs/mnist/mlp/exp0001";
  const auto record = ql::core::read_unit_record(unit);
  ASSERT_EQ(record.folds.size(), 3u);
  for (std::size_t k = 0; k < 3; ++k) {
    EXPECT_EQ(record.folds[k].status, "done");
    EXPECT_TRUE(fs::exists(unit / fmt::format("fold{}/metrics.h5", k)));
  }
  // Each fold validates on a third of the 2160 training images.
  EXPECT_NE(result.out.find("fold 1/3: epoch 1/1"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("3 folds: trained test top-1 "), std::string::npos) << result.out;
  const std::string report = ql::test::read_text(unit / "report.md");
  EXPECT_NE(report.find("| mean ± std |"), std::string::npos) << report;
}

// A grid over seeds: each learning rate becomes one row of mean ± sd over its seeds (the
// numbers checked against the units' own records), and the result is plotted against the rate.
TEST_F(QlhostResultsTest, ASweepOverSeedsGivesMeanAndSpreadAndAPlot) {
  const auto sweep = run_qlhost(fmt::format("sweep {} --set training.epochs=1 --set training.checkpoint_every_steps=0 "
                                            "--grid 'training.optimizer.lr=[0.001,0.002,0.004]' "
                                            "--grid 'experiment.seed=[1,2]'",
                                            ql::test::quoted((dir_ / "exp.toml").string())),
                                dir_.path());
  ASSERT_EQ(sweep.exit_code, 0) << sweep.out << sweep.err;
  const fs::path dir = dir_ / "logs/mnist/mlp/sweep0001";
  const std::string report = ql::test::read_text(dir / "report.md");
  std::vector<double> top1;
  for (int unit : {3, 4}) {  // lr 0.002, seeds 1 and 2 (one job: units numbered in sweep order)
    top1.push_back(100 * ql::core::read_unit_record(dir_ / fmt::format("logs/mnist/mlp/exp{:04d}", unit)).folds[0].result_top1);
  }
  const double mean = (top1[0] + top1[1]) / 2;
  const double sd = std::abs(top1[0] - top1[1]) / std::sqrt(2.0);
  EXPECT_NE(report.find("## Over seeds"), std::string::npos) << report;
  EXPECT_NE(report.find(fmt::format("| 0.002 | 2 | {:.2f} ± {:.2f} |", mean, sd)), std::string::npos) << report;
  EXPECT_TRUE(fs::exists(dir / "sweep.png"));
  EXPECT_NE(report.find("](sweep.png)"), std::string::npos) << report;
}

TEST_F(QlhostResultsTest, SweepsRunEveryCombinationAndCompareThem) {
  const auto sweep = run_qlhost(fmt::format("sweep {} --set training.epochs=1 --set training.checkpoint_every_steps=0 "
                                            "--grid 'training.optimizer.lr=[0.001,0.002]' --jobs 2",
                                            ql::test::quoted((dir_ / "exp.toml").string())),
                                dir_.path());
  ASSERT_EQ(sweep.exit_code, 0) << sweep.out << sweep.err;
  const fs::path dir = dir_ / "logs/mnist/mlp/sweep0001";
  EXPECT_TRUE(fs::exists(dir / "sweep.toml"));
  const std::string report = ql::test::read_text(dir / "report.md");
  // One column per grid key, a row per unit, and where the units ran.
  EXPECT_NE(report.find("| # | training.optimizer.lr | unit |"), std::string::npos) << report;
  EXPECT_NE(report.find("| 0 | 0.001 | exp000"), std::string::npos) << report;  // 2 jobs: either unit first
  EXPECT_NE(report.find("| 1 | 0.002 | exp000"), std::string::npos) << report;
  EXPECT_NE(report.find("units: QuantLab "), std::string::npos) << report;
  EXPECT_EQ(ql::core::read_unit_record(dir_ / "logs/mnist/mlp/exp0001").status, "done");
  EXPECT_EQ(ql::core::read_unit_record(dir_ / "logs/mnist/mlp/exp0002").status, "done");

  // The listing shows both units and what changed between them.
  const auto listing = run_qlhost(fmt::format("experiments mnist/mlp --logs {}",
                                              ql::test::quoted((dir_ / "logs").string())),
                                  dir_.path());
  ASSERT_EQ(listing.exit_code, 0) << listing.err;
  EXPECT_NE(listing.out.find("mnist/mlp/exp0002 | done"), std::string::npos) << listing.out;
  EXPECT_TRUE(listing.out.find("training.optimizer.lr: 0.001 -> 0.002") != std::string::npos ||
              listing.out.find("training.optimizer.lr: 0.002 -> 0.001") != std::string::npos)
      << listing.out;

  // For clusters: a Slurm job array, one task per combination, valid bash.
  const auto slurm = run_qlhost(fmt::format("sweep {} --grid 'training.epochs=[1,2,3]' --launcher slurm",
                                            ql::test::quoted((dir_ / "exp.toml").string())),
                                dir_.path());
  ASSERT_EQ(slurm.exit_code, 0) << slurm.err;
  const fs::path script = dir_ / "logs/mnist/mlp/sweep0002/sweep.sbatch";
  const std::string text = ql::test::read_text(script);
  EXPECT_NE(text.find("#SBATCH --array=0-2"), std::string::npos) << text;
  EXPECT_NE(text.find("'training.epochs=3'"), std::string::npos) << text;
  EXPECT_EQ(run_command("bash -n " + ql::test::quoted(script.string())).exit_code, 0);
  // A bad grid is refused before anything runs.
  const auto bad = run_qlhost(fmt::format("sweep {} --grid 'training.epochz=[1,2]'",
                                          ql::test::quoted((dir_ / "exp.toml").string())),
                              dir_.path());
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_FALSE(fs::exists(dir_ / "logs/mnist/mlp/sweep0003"));
}

TEST_F(QlhostResultsTest, AnaScheduleAndWeightShiftResumeExactly) {
  // The controller with a mean: the latent weights are shifted once, at the first epoch; a
  // resumed run must neither repeat nor skip that, and must continue the schedule.
  ql::test::write_text(dir_ / "ana.toml", ql::test::read_text(dir_ / "exp.toml") + R"(
[[algorithm]]
plugin = "ana"
schedule = "controller"
sigma_end = [3.0]
mu_beta = [-0.05]
mu_end = [3.0]
)");
  const auto ana_args = [&](const std::string& extra) {
    return fmt::format("run {} --set topology.activation=identity --set topology.batch_norm=true {}",
                       ql::test::quoted((dir_ / "ana.toml").string()), extra);
  };
  const auto reference = run_qlhost(ana_args(""), dir_.path());
  ASSERT_EQ(reference.exit_code, 0) << reference.out << reference.err;
  ::setenv("HOME", dir_.path().c_str(), 1);
  ::setenv("QL_PLUGIN_PATH", "", 1);
  const pid_t child = ql::core::spawn({QL_TEST_QLHOST, "run", (dir_ / "ana.toml").string(), "--set",
                                       "topology.activation=identity", "--set", "topology.batch_norm=true"},
                                      dir_ / "ana.log");
  wait_for_steps(dir_ / "logs/mnist/mlp/exp0002", 180);
  ::kill(child, SIGINT);
  EXPECT_EQ(ql::core::wait_for(child), 130) << ql::test::read_text(dir_ / "ana.log");
  const auto resumed = run_qlhost(ana_args("--resume"), dir_.path());
  ASSERT_EQ(resumed.exit_code, 0) << resumed.out << resumed.err;
  expect_same_weights(dir_ / "logs/mnist/mlp/exp0001/fold0/checkpoints/last.pt",
                      dir_ / "logs/mnist/mlp/exp0002/fold0/checkpoints/last.pt");
  // The schedule's statistics are in the metrics, continued across the resume.
  const std::string series = python_check(dir_ / "logs/mnist/mlp/exp0002/fold0");
  EXPECT_NE(series.find("scalar ana/sigma_forward/group0 3"), std::string::npos) << series;
  EXPECT_NE(series.find("scalar ana/weight_level_fraction/0 3"), std::string::npos) << series;
}

// The kept network's predictions: predictions.h5 per sample and the confusion matrix, whose
// diagonal is the unit's top-1, in the report.
TEST_F(QlhostResultsTest, TheConfusionMatrixOfTheKeptNetworkAgreesWithItsTop1) {
  const auto result = run_qlhost(run_args("--set training.epochs=1 --set training.checkpoint_every_steps=0"), dir_.path());
  ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
  const fs::path unit = dir_ / "logs/mnist/mlp/exp0001";
  EXPECT_TRUE(fs::exists(unit / "fold0" / "predictions.h5"));
  const ql::test::Confusion confusion = ql::test::read_confusion(unit / "fold0" / "confusion.csv");
  EXPECT_EQ(confusion.classes, (std::vector<std::string>{"0", "1", "2", "3"}));
  EXPECT_GT(confusion.total, 0);
  EXPECT_DOUBLE_EQ(confusion.diagonal / confusion.total, ql::core::read_unit_record(unit).folds.at(0).result_top1);
  EXPECT_NE(ql::test::read_text(unit / "report.md").find("## Confusion matrix"), std::string::npos);
}
