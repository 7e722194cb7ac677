// Faults a long run must survive, with real qlhost processes: a corrupted or truncated
// checkpoint, a full disk (a file-size limit) while writing one, a loss that turns NaN, and a
// plugin that throws from any of its hooks.
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
using ql::test::quoted;

namespace {

const std::string kExperiment = ql::test::small_mlp_experiment(9);

class QlhostFaultsTest : public ::testing::Test {
 protected:
  QlhostFaultsTest() {
    ql::test::write_idx_dataset(dir_ / "data", 1010, 100, 28, 4, /*gzip=*/false);
    ql::test::write_text(dir_ / "exp.toml", kExperiment);
  }

  // `qlhost run exp.toml EXTRA` after the shell command `before` (e.g. a ulimit).
  ql::test::CommandResult qlhost(const std::string& extra, const std::string& before = "") const {
    return ql::test::run_command(fmt::format("{}HOME={} QL_PLUGIN_PATH= {} run {} {}", before, quoted(dir_.path().string()),
                                             quoted(QL_TEST_QLHOST), quoted((dir_ / "exp.toml").string()), extra));
  }

  fs::path unit(int number) const { return dir_ / fmt::format("logs/mnist/mlp/exp{:04d}", number); }

  // Runs the experiment as unit `number` and stops it with SIGINT after step 20 (exit 130, a
  // checkpoint at the step it stopped).
  void run_and_stop(int number) const {
    ::setenv("HOME", dir_.path().c_str(), 1);
    ::setenv("QL_PLUGIN_PATH", "", 1);
    const pid_t child = ql::core::spawn({QL_TEST_QLHOST, "run", (dir_ / "exp.toml").string()}, dir_ / "stopped.log");
    const bool reached = ql::test::wait_for_checkpointed_steps(unit(number), 20);
    ::kill(child, SIGINT);
    ASSERT_TRUE(reached) << ql::test::read_text(dir_ / "stopped.log");
    ASSERT_EQ(ql::core::wait_for(child), 130) << ql::test::read_text(dir_ / "stopped.log");
  }

  static int lines(const std::string& text) { return static_cast<int>(std::count(text.begin(), text.end(), '\n')); }

  ql::test::TempDir dir_;
};

}  // namespace

// bad-input: a corrupted or truncated checkpoint | `…/last.pt: checksum mismatch (CRC-32C …): the checkpoint is corrupt`; `… not a QuantLab checkpoint or truncated …` | 1
TEST_F(QlhostFaultsTest, ACorruptedOrTruncatedCheckpointIsRefusedAndTheRepairedOneResumes) {
  run_and_stop(1);
  const fs::path last = unit(1) / "fold0/checkpoints/last.pt";
  const std::vector<std::uint8_t> good = ql::test::read_bytes(last);
  ASSERT_GT(good.size(), 1000u);

  // One flipped bit in the middle of the tensors: LibTorch's reader would load it.
  std::vector<std::uint8_t> flipped = good;
  flipped[flipped.size() / 2] ^= 0x10;
  ql::test::write_bytes(last, flipped);
  const auto corrupt = qlhost("--resume");
  EXPECT_EQ(corrupt.exit_code, 1);
  EXPECT_EQ(lines(corrupt.err), 1) << corrupt.err;
  EXPECT_NE(corrupt.err.find(last.string() + ": checksum mismatch"), std::string::npos) << corrupt.err;

  // Cut short, as by a copy that stopped.
  ql::test::write_bytes(last, std::vector<std::uint8_t>(good.begin(), good.begin() + static_cast<long>(good.size() / 3)));
  const auto truncated = qlhost("--resume");
  EXPECT_EQ(truncated.exit_code, 1);
  EXPECT_NE(truncated.err.find("not a QuantLab checkpoint or truncated"), std::string::npos) << truncated.err;

  ql::test::write_bytes(last, good);
  const auto resumed = qlhost("--resume");
  EXPECT_EQ(resumed.exit_code, 0) << resumed.err;
}

// bad-input: a full disk (file-size limit) while writing a checkpoint | `cannot write …/last.pt: File too large`; the previous checkpoint is untouched, `--resume` later ends as if never stopped | 1
TEST_F(QlhostFaultsTest, AFullDiskWhileCheckpointingKeepsThePreviousCheckpointAndLosesNothing) {
  const auto reference = qlhost("");
  ASSERT_EQ(reference.exit_code, 0) << reference.err;
  run_and_stop(2);
  const fs::path checkpoints = unit(2) / "fold0/checkpoints";
  const std::vector<std::uint8_t> before = ql::test::read_bytes(checkpoints / "last.pt");
  ASSERT_GT(before.size(), 150u * 1024);

  // No file may grow past 100 KiB: the next checkpoint (~400 KiB) cannot be written.
  const auto full = qlhost("--resume", "ulimit -f 100; ");
  EXPECT_EQ(full.exit_code, 1) << full.out << full.err;
  EXPECT_EQ(lines(full.err), 1) << full.err;
  EXPECT_NE(full.err.find("cannot write " + (checkpoints / "last.pt").string() + ": File too large"), std::string::npos)
      << full.err;
  EXPECT_EQ(ql::test::read_bytes(checkpoints / "last.pt"), before);
  for (const auto& entry : fs::directory_iterator(checkpoints)) {
    EXPECT_EQ(entry.path().extension(), ".pt") << "left behind: " << entry.path();
  }
  const auto record = ql::core::read_unit_record(unit(2));
  EXPECT_EQ(record.status, "failed");

  // With room again the unit resumes from that checkpoint and ends as if never stopped.
  const auto resumed = qlhost("--resume exp0002");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  const auto a = ql::test::checkpoint_model(unit(1) / "fold0/checkpoints/last.pt");
  const auto b = ql::test::checkpoint_model(checkpoints / "last.pt");
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [key, value] : a) EXPECT_TRUE(torch::equal(value, b.at(key))) << key;
}

// bad-input: a learning rate that makes the loss NaN | `the training loss became nan at step S (epoch E, batch B); the last good checkpoint is …/last.pt (step S-1)` | 1
TEST_F(QlhostFaultsTest, ALossThatTurnsNanStopsTheRunNamingTheStepAndTheLastGoodCheckpoint) {
  const auto run = qlhost("--set training.optimizer.lr=1e6 --set training.checkpoint_every_steps=1");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_EQ(lines(run.err), 1) << run.err;
  EXPECT_NE(run.err.find("the training loss became"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find(" at step "), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("the last good checkpoint is "), std::string::npos) << run.err;
  const auto record = ql::core::read_unit_record(unit(1));
  EXPECT_EQ(record.status, "failed");
  // The checkpoint it names exists and loads, with finite weights.
  const std::string named = run.err.substr(run.err.find("checkpoint is ") + 14);
  if (named.rfind("none", 0) != 0) {
    const fs::path file = named.substr(0, named.find(" (step"));
    for (const auto& [key, value] : ql::test::checkpoint_model(file)) EXPECT_TRUE(torch::isfinite(value).all().item<bool>()) << key;
  }
}

struct HookCase {
  const char* hook;
  const char* kind;
  const char* reason;
};

class ThrowingPlugin : public QlhostFaultsTest, public ::testing::WithParamInterface<HookCase> {};

// bad-input: a plugin that throws in a hook (attach, on_epoch_begin, on_step_end, gradient_codec, variants, apply_variant, post_training, save_state; any exception type) | `plugin 'throwing' failed in on_step_end: deliberate failure`, the unit marked failed | 1
TEST_P(ThrowingPlugin, GivesOneLineNamingThePluginAndTheHook) {
  const HookCase& c = GetParam();
  ql::test::write_text(dir_ / "exp.toml", kExperiment +
                                              fmt::format("[[algorithm]]\nplugin = \"throwing\"\nhook = \"{}\"\nkind = \"{}\"\n",
                                                          c.hook, c.kind));
  const auto run = qlhost(fmt::format("--set training.epochs=1 --plugin-dir {}",
                                      quoted(std::string(QL_TEST_FIXTURE_DIR) + "/throwing")));
  EXPECT_EQ(run.exit_code, 1) << run.out << run.err;
  // One line, from the CLI's edge; a checkpoint being written says so first.
  EXPECT_EQ(lines(run.err), 1) << run.err;
  EXPECT_EQ(run.err.rfind("qlhost: error: ", 0), 0u) << run.err;
  EXPECT_NE(run.err.find(fmt::format("plugin 'throwing' failed in {}: {}\n", c.hook, c.reason)), std::string::npos)
      << run.err;
  EXPECT_EQ(ql::core::read_unit_record(unit(1)).status, "failed");
}

INSTANTIATE_TEST_SUITE_P(
    Hooks, ThrowingPlugin,
    ::testing::Values(HookCase{"attach", "error", "deliberate failure"},
                      HookCase{"on_epoch_begin", "std", "deliberate failure"},
                      HookCase{"on_step_end", "error", "deliberate failure"},
                      HookCase{"gradient_codec", "error", "deliberate failure"},
                      HookCase{"variants", "error", "deliberate failure"},
                      HookCase{"apply_variant", "other", "it threw something that is not a std::exception"},
                      HookCase{"post_training", "error", "deliberate failure"},
                      HookCase{"save_state", "error", "deliberate failure"}),
    [](const ::testing::TestParamInfo<HookCase>& info) {
      return std::string(info.param.hook) + "_" + info.param.kind;
    });
