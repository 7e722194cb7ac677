// qlhost end to end, as a user runs it: tiny IDX files generated here, the real plugins.
#include "support/test_support.hpp"

#include <gtest/gtest.h>

#include <fmt/format.h>
#include <torch/cuda.h>
#include <torch/types.h>

#include <algorithm>
#include <fstream>

namespace fs = std::filesystem;
using ql::test::run_qlhost;

namespace {

class QlhostCliTest : public ::testing::Test {
 protected:
  QlhostCliTest() {
    ql::test::write_idx_dataset(dir_ / "data", 600, 120, 8, 4, /*gzip=*/true);
    ql::test::write_text(dir_ / "exp.toml", experiment(""));
  }

  std::string experiment(const std::string& extra) const {
    return fmt::format(R"([experiment]
seed = 7
[storage]
logs = "{}"
[problem]
plugin = "mnist"
data_dir = "{}"
image_size = [8, 8]
classes = 4
[topology]
plugin = "mlp"
hidden = [32]
[training]
epochs = 3
batch_size = 32
[[algorithm]]
plugin = "uniform"
bits = 6
min_bits = 2
max_bits = 5
{})",
                       (dir_ / "logs").string(), (dir_ / "data").string(), extra);
  }

  std::string run_args(const std::string& extra = "") const {
    return "run '" + (dir_ / "exp.toml").string() + "' " + extra;
  }

  static std::size_t lines(const std::string& text) {
    return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
  }

  ql::test::TempDir dir_;
};

}  // namespace

TEST_F(QlhostCliTest, RunTrainsSweepsAndWritesResults) {
  const auto result = run_qlhost(run_args(), dir_.path());
  ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
  const fs::path unit = dir_ / "logs/mnist/mlp/exp0001";
  EXPECT_TRUE(fs::exists(unit / "config.toml"));
  EXPECT_TRUE(fs::exists(unit / "fold0/checkpoints/last.pt"));
  EXPECT_TRUE(fs::exists(unit / "fold0/checkpoints/best.pt"));
  EXPECT_TRUE(fs::exists(unit / "fold0/checkpoints/result.pt"));
  EXPECT_TRUE(fs::exists(unit / "fold0/metrics.h5"));
  EXPECT_TRUE(fs::exists(unit / "report.md"));
  EXPECT_TRUE(fs::exists(unit / "unit.toml"));
  // The report's plots: curves, accuracy per bit depth, per-layer error; real PNG files.
  for (const char* plot : {"loss.png", "accuracy.png", "uniform_accuracy.png", "uniform_layer_error.png"}) {
    ASSERT_TRUE(fs::exists(unit / plot)) << plot;
    EXPECT_EQ(ql::test::read_text(unit / plot).substr(1, 3), "PNG") << plot;
  }
  bool events = false;
  for (const auto& entry : fs::directory_iterator(unit / "fold0")) {
    events |= entry.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
  }
  EXPECT_TRUE(events);
  const std::string record = ql::test::read_text(unit / "unit.toml");
  EXPECT_NE(record.find("status = 'done'"), std::string::npos) << record;
  // No temporary file is left behind.
  for (const auto& entry : fs::recursive_directory_iterator(unit)) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos) << entry.path();
  }
  // result.pt holds the effective weights: each quantised tensor on its 6-bit grid, described.
  const fs::path result_pt = unit / "fold0/checkpoints/result.pt";
  const auto quantizers = ql::test::checkpoint_quantizers(result_pt);
  const auto model = ql::test::checkpoint_model(result_pt);
  EXPECT_FALSE(quantizers.empty());
  for (const auto& [tensor, description] : quantizers) {
    EXPECT_NE(description.find("uniform quantifind 6 bits"), std::string::npos) << tensor << ": " << description;
    ASSERT_TRUE(model.count("model/" + tensor)) << tensor;
    EXPECT_LE(std::get<0>(at::_unique(model.at("model/" + tensor))).numel(), 64) << tensor;
  }
  // The resolved config holds every default.
  const std::string config = ql::test::read_text(unit / "config.toml");
  EXPECT_NE(config.find("hold_out_seed = 1234"), std::string::npos);
  EXPECT_NE(config.find("fingerprint"), std::string::npos);
  // The sweep table: header, the float row, one row per bit depth 2..5.
  const std::string table = ql::test::read_text(unit / "fold0/uniform_variants.csv");
  EXPECT_EQ(lines(table), 6u) << table;
  EXPECT_EQ(table.rfind("variant,bits,loss,top1,loss_ratio,top1_ratio\n", 0), 0u) << table;
  EXPECT_NE(table.find("\n5 bits,5,"), std::string::npos) << table;
  // Three epoch lines; the learnable set is learnt.
  EXPECT_NE(result.out.find("epoch 3/3"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("| 2 bits | 2 |"), std::string::npos) << result.out;
  const auto at = result.out.find("trained network on test: loss ");
  ASSERT_NE(at, std::string::npos) << result.out;
  const auto top1 = result.out.find("top1 ", at);
  EXPECT_GT(std::stod(result.out.substr(top1 + 5)), 90.0) << result.out;
}

TEST_F(QlhostCliTest, SecondRunGetsTheNextUnit) {
  ASSERT_EQ(run_qlhost(run_args("--set training.epochs=1"), dir_.path()).exit_code, 0);
  ASSERT_EQ(run_qlhost(run_args("--set training.epochs=1"), dir_.path()).exit_code, 0);
  EXPECT_TRUE(fs::exists(dir_ / "logs/mnist/mlp/exp0002/config.toml"));
}

TEST_F(QlhostCliTest, SameSeedGivesTheSameNumbers) {
  const auto a = run_qlhost(run_args("--set training.epochs=1 --set run.threads=1"), dir_.path());
  const auto b = run_qlhost(run_args("--set training.epochs=1 --set run.threads=1"), dir_.path());
  ASSERT_EQ(a.exit_code, 0);
  EXPECT_EQ(ql::test::read_text(dir_ / "logs/mnist/mlp/exp0001/uniform_variants.csv"),
            ql::test::read_text(dir_ / "logs/mnist/mlp/exp0002/uniform_variants.csv"));
}

// bad-input: an unknown key in the experiment file | `exp.toml:21:1: unknown key 'algorithm[0].bitz' (did you mean 'bits'?); valid keys here: …` | 2
TEST_F(QlhostCliTest, BadConfigGivesOneLineAndExitTwo) {
  ql::test::write_text(dir_ / "exp.toml", experiment("bitz = 3"));
  const auto result = run_qlhost(run_args(), dir_.path());
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_EQ(lines(result.err), 1u) << result.err;
  EXPECT_NE(result.err.find("exp.toml:21:1: unknown key 'algorithm[0].bitz'"), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("did you mean 'bits'"), std::string::npos) << result.err;
  EXPECT_FALSE(fs::exists(dir_ / "logs")) << "a rejected experiment must not create results";
}

// bad-input: a plugin option out of its range | `… bits: expected an integer in [2, 32], got 40` | 2
TEST_F(QlhostCliTest, OutOfRangePluginOptionGivesExitTwo) {
  const auto result = run_qlhost(run_args("--set algorithm.uniform.bits=40"), dir_.path());
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_EQ(lines(result.err), 1u) << result.err;
  EXPECT_NE(result.err.find("bits: expected an integer in [2, 32], got 40"), std::string::npos) << result.err;
  // Reported before any data is read or any unit is made: the data folder does not even exist.
  const auto early = run_qlhost(run_args("--set algorithm.uniform.bits=40 --set problem.data_dir=/nonexistent"), dir_.path());
  EXPECT_EQ(early.exit_code, 2);
  EXPECT_NE(early.err.find("bits: expected an integer"), std::string::npos) << early.err;
  EXPECT_FALSE(fs::exists(dir_ / "logs/mnist")) << "a unit was made for a run that could not start";
}

// bad-input: a device that is malformed (`gpu`, `cuda:x`), CUDA without a GPU, or a GPU that is not there (`cuda:3` on one GPU); a precision that is not fp32 or bf16 | `run.device: expected "auto", "cpu", "cuda" or "cuda:N", got "gpu"`; `run.device: "cuda" asks for CUDA, but none is available (…)`; `run.device: "cuda:3" is not here: LibTorch sees 1 CUDA device (cuda:0 to cuda:0)` | 2
TEST_F(QlhostCliTest, DeviceChoicesAreCheckedBeforeAnyWork) {
  for (const char* bad : {"gpu", "cuda:x", "cuda:", "cuda:12345"}) {
    const auto result = run_qlhost(run_args(fmt::format("--set run.device={}", bad)), dir_.path());
    EXPECT_EQ(result.exit_code, 2) << bad << ": " << result.err;
    EXPECT_NE(result.err.find("expected \"auto\", \"cpu\", \"cuda\" or \"cuda:N\""), std::string::npos) << result.err;
  }
  const auto precision = run_qlhost(run_args("--set run.precision=fp16"), dir_.path());
  EXPECT_EQ(precision.exit_code, 2) << precision.err;
  EXPECT_NE(precision.err.find("run.precision"), std::string::npos) << precision.err;
  // One past the devices there are: none here, or the count on a GPU machine.
  const auto count = torch::cuda::device_count();
  const std::string absent = count == 0 ? "cuda" : fmt::format("cuda:{}", count);
  const auto missing = run_qlhost(run_args("--set run.device=" + absent), dir_.path());
  EXPECT_EQ(missing.exit_code, 2) << missing.err;
  EXPECT_EQ(lines(missing.err), 1u) << missing.err;
  const std::string expected = count == 0 ? "asks for CUDA, but none is available"
                                          : fmt::format("LibTorch sees {} CUDA device", count);
  EXPECT_NE(missing.err.find(expected), std::string::npos) << missing.err;
  EXPECT_FALSE(fs::exists(dir_ / "logs/mnist")) << "a unit was made for a run that could not start";
}

// bad-input: an experiment file that is not valid TOML | `qlhost: error: exp.toml:1:…: ` and the parser's reason, one line | 2
TEST_F(QlhostCliTest, MalformedTomlGivesExitTwo) {
  ql::test::write_text(dir_ / "exp.toml", "[problem\nplugin = 1\n");
  const auto result = run_qlhost(run_args(), dir_.path());
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("exp.toml:1:"), std::string::npos) << result.err;
}

// bad-input: an experiment file that does not exist | `cannot open the experiment file …` | 2
TEST_F(QlhostCliTest, MissingExperimentFileGivesExitTwo) {
  const auto result = run_qlhost("run /nonexistent/exp.toml", dir_.path());
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("cannot open the experiment file"), std::string::npos) << result.err;
}

// bad-input: a truncated (gzipped) IDX data file | one line naming the file and what is missing | 1
TEST_F(QlhostCliTest, TruncatedDataFileGivesExitOneNamingTheFile) {
  const fs::path labels = dir_ / "data/train-labels-idx1-ubyte.gz";
  auto bytes = ql::test::read_bytes(labels);
  bytes.resize(bytes.size() - 20);
  ql::test::write_bytes(labels, bytes);
  const auto result = run_qlhost(run_args(), dir_.path());
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_EQ(lines(result.err), 1u) << result.err;
  EXPECT_NE(result.err.find(labels.string()), std::string::npos) << result.err;
}

// bad-input: a text file named `*.so` in a plugin directory | skipped; with `--verbose`: `x.so: not an ELF file` | 0
TEST_F(QlhostCliTest, PluginsListsTheBundledPluginsDespiteATextFileNamedSo) {
  ql::test::write_text(dir_ / "plugins/x.so", "not a plugin\n");
  const auto result = run_qlhost("plugins --plugin-dir '" + (dir_ / "plugins").string() + "'", dir_.path());
  ASSERT_EQ(result.exit_code, 0) << result.err;
  for (const char* name : {"mnist", "mlp", "uniform"}) {
    EXPECT_NE(result.out.find(name), std::string::npos) << result.out;
  }
  EXPECT_TRUE(result.err.empty()) << result.err;
  const auto verbose = run_qlhost("plugins -v --plugin-dir '" + (dir_ / "plugins").string() + "'", dir_.path());
  EXPECT_NE(verbose.err.find("x.so: not an ELF file"), std::string::npos) << verbose.err;
}

TEST_F(QlhostCliTest, PluginsShowPrintsOptionsWithDocumentation) {
  const auto result = run_qlhost("plugins --show uniform", dir_.path());
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("min_bits = 2"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("# quantifind"), std::string::npos) << result.out;
  EXPECT_EQ(run_qlhost("plugins --show unifrom", dir_.path()).exit_code, 2);
  EXPECT_NE(run_qlhost("plugins --show host", dir_.path()).out.find("[training.optimizer]"), std::string::npos);
}

// bad-input: an unknown command, a missing argument or an unknown flag | `unknown command 'frobnicate' (commands: …)`, the option parser's message | 2
TEST_F(QlhostCliTest, UsageErrorsGiveExitTwo) {
  EXPECT_EQ(run_qlhost("frobnicate", dir_.path()).exit_code, 2);
  EXPECT_EQ(run_qlhost("run", dir_.path()).exit_code, 2);
  EXPECT_EQ(run_qlhost("run --no-such-flag x.toml", dir_.path()).exit_code, 2);
  EXPECT_EQ(run_qlhost("run --help", dir_.path()).exit_code, 0);
}

TEST_F(QlhostCliTest, SummaryPrintsTheNetworkWithoutData) {
  fs::remove_all(dir_ / "data");
  const auto result = run_qlhost("summary '" + (dir_ / "exp.toml").string() + "'", dir_.path());
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("fc1 "), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("ql::nn::linear"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("[1, 32]"), std::string::npos) << result.out;
  // 8x8 inputs, one hidden layer of 32, 4 classes: 64*32+32 + 32*4+4 parameters.
  EXPECT_NE(result.out.find("total parameters 2,212; 3 quantisable layers hold 2,212"), std::string::npos) << result.out;
  const auto resnet = run_qlhost("summary '" + (dir_ / "exp.toml").string() + "' --set topology.plugin=\"resnet\"",
                                 dir_.path());
  EXPECT_EQ(resnet.exit_code, 2) << "mlp's 'hidden' is not a resnet option: " << resnet.err;
}
