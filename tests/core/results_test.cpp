// The results machinery without training: unit folders, atomic files, folds, metrics.h5,
// TensorBoard framing, storage roots, sweep grids, the unit record.
#include "quantlab/core/experiment_store.hpp"
#include "quantlab/core/folds.hpp"
#include "quantlab/core/metrics_log.hpp"
#include "quantlab/core/storage.hpp"
#include "quantlab/core/sweep.hpp"
#include "quantlab/core/unit_record.hpp"
#include "quantlab/sdk/error.hpp"
#include "support/test_support.hpp"

#include <gtest/gtest.h>
#include <torch/serialize/output-archive.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <sys/wait.h>
#include <unistd.h>

namespace fs = std::filesystem;
using ql::test::TempDir;

namespace {

// Sets an environment variable for the scope of a test.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

}  // namespace

TEST(ResultsTest, ConcurrentProcessesGetDistinctUnits) {
  TempDir dir;
  constexpr int kProcesses = 4, kEach = 25;
  std::vector<pid_t> children;
  for (int p = 0; p < kProcesses; ++p) {
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      // The child records each folder it got, one file per folder name, then exits.
      for (int i = 0; i < kEach; ++i) {
        const fs::path unit = ql::core::allocate_unit(dir.path(), "mnist", "mlp");
        ql::test::write_text(unit / fmt::format("owner{}", p), "");
      }
      std::_Exit(0);
    }
    children.push_back(child);
  }
  for (pid_t child : children) {
    int status = 0;
    ::waitpid(child, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  const auto units = ql::core::list_units(dir / "mnist/mlp");
  ASSERT_EQ(units.size(), static_cast<std::size_t>(kProcesses * kEach));
  for (const fs::path& unit : units) {
    // Exactly one process owns each folder.
    EXPECT_EQ(std::distance(fs::directory_iterator(unit), fs::directory_iterator{}), 1) << unit;
  }
  EXPECT_EQ(units.front().filename(), "exp0001");
  EXPECT_EQ(units.back().filename(), "exp0100");
}

TEST(ResultsTest, AFailedCheckpointWriteKeepsThePreviousOne) {
  TempDir dir;
  const fs::path file = dir / "last.pt";
  ql::core::save_checkpoint(file, [](torch::serialize::OutputArchive& archive) {
    archive.write("value", torch::tensor({1.0, 2.0}));
  });
  const auto good = ql::test::read_bytes(file);
  // The writer dies half-way (as a full disk or an exception in a plugin's save_state would).
  EXPECT_THROW(ql::core::save_checkpoint(file,
                                         [](torch::serialize::OutputArchive& archive) {
                                           archive.write("value", torch::tensor({3.0}));
                                           throw ql::Error("no space left on device");
                                         }),
               ql::Error);
  EXPECT_EQ(ql::test::read_bytes(file), good);
  // No temporary file is left next to it.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator{}), 1);
  // The same for plain files written atomically.
  ql::core::write_file_atomically(dir / "a.txt", "old");
  EXPECT_THROW(ql::core::write_atomically(dir / "a.txt",
                                          [](const fs::path& temporary) {
                                            ql::test::write_text(temporary, "half");
                                            throw ql::Error("killed");
                                          }),
               ql::Error);
  EXPECT_EQ(ql::test::read_text(dir / "a.txt"), "old");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator{}), 2);
}

TEST(ResultsTest, FoldsPartitionTheTrainingSplitExactly) {
  constexpr std::int64_t kSize = 103, kFolds = 5;
  std::vector<int> validated(kSize, 0);
  for (std::int64_t k = 0; k < kFolds; ++k) {
    const auto fold = ql::core::fold_indices(kSize, kFolds, k, 42);
    EXPECT_EQ(fold.train.size() + fold.valid.size(), static_cast<std::size_t>(kSize));
    EXPECT_NEAR(static_cast<double>(fold.valid.size()), static_cast<double>(kSize) / kFolds, 1.0);
    std::set<std::int64_t> all(fold.train.begin(), fold.train.end());
    for (std::int64_t i : fold.valid) {
      EXPECT_FALSE(all.count(i)) << "sample " << i << " both trains and validates in fold " << k;
      all.insert(i);
      ++validated[static_cast<std::size_t>(i)];
    }
    EXPECT_EQ(all.size(), static_cast<std::size_t>(kSize));
    // Fold k validates on positions k, k+K, ... of the seeded permutation.
    const auto order = ql::seeded_permutation(kSize, 42);
    std::vector<std::int64_t> expected;
    for (std::int64_t i = k; i < kSize; i += kFolds) expected.push_back(order[static_cast<std::size_t>(i)]);
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(fold.valid, expected);
  }
  // Every sample validates in exactly one fold.
  EXPECT_TRUE(std::all_of(validated.begin(), validated.end(), [](int n) { return n == 1; }));
  EXPECT_THROW(ql::core::fold_indices(3, 5, 0, 1), ql::ConfigError);
}

// The host's validation hold-out: the last floor(n·fraction) of a seeded permutation validate,
// the same draw the problems made themselves before SDK 0.4.0.
TEST(ResultsTest, HoldOutIsTheSeededPermutationsTailSortedAndComplete) {
  const auto split = ql::core::hold_out_indices(100, 0.2, 1234);
  ASSERT_EQ(split.valid.size(), 20u);
  ASSERT_EQ(split.train.size(), 80u);
  const auto order = ql::seeded_permutation(100, 1234);
  std::vector<std::int64_t> tail(order.end() - 20, order.end());
  std::sort(tail.begin(), tail.end());
  EXPECT_EQ(split.valid, tail);
  std::set<std::int64_t> all(split.train.begin(), split.train.end());
  all.insert(split.valid.begin(), split.valid.end());
  EXPECT_EQ(all.size(), 100u);
  EXPECT_TRUE(std::is_sorted(split.train.begin(), split.train.end()));
  EXPECT_EQ(ql::core::hold_out_indices(100, 0.2, 1234).valid, split.valid);
  EXPECT_NE(ql::core::hold_out_indices(100, 0.2, 7).valid, split.valid);
  EXPECT_TRUE(ql::core::hold_out_indices(100, 0.0, 1234).valid.empty());
}

TEST(ResultsTest, MaskedCrc32cMatchesTheKnownVectors) {
  // CRC-32C("123456789") = 0xE3069283 (RFC 3720's check value); TensorFlow's mask is
  // ((crc >> 15) | (crc << 17)) + 0xa282ead8, computed here by hand.
  const std::uint32_t crc = 0xE3069283u;
  const std::uint32_t masked = ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
  EXPECT_EQ(ql::core::masked_crc32c("123456789", 9), masked);
  // 32 zero bytes: CRC-32C 0x8A9136AA (RFC 3720 B.4).
  const std::vector<std::uint8_t> zeros(32, 0);
  const std::uint32_t zero_crc = 0x8A9136AAu;
  EXPECT_EQ(ql::core::masked_crc32c(zeros.data(), zeros.size()), ((zero_crc >> 15) | (zero_crc << 17)) + 0xa282ead8u);
}

TEST(ResultsTest, Hdf5RoundTripKeepsEverySeriesAndHistogram) {
  TempDir dir;
  ql::core::MetricsData data;
  data.scalars["train/loss"] = {{1, 100.5, 2.25}, {2, 101.5, 1.5}, {3, 102.0, 1.125}};
  data.scalars["valid/top1"] = {{3, 102.5, 0.875}};
  data.scalars["uniform/empty"] = {};
  data.histograms["weights/fc1"] = {ql::core::histogram_of(torch::arange(10.0), 5, 3, 103.0),
                                    ql::core::histogram_of(torch::ones({4}), 5, 6, 104.0)};
  ql::core::write_metrics_h5(dir / "metrics.h5", data);
  const ql::core::MetricsData back = ql::core::read_metrics_h5(dir / "metrics.h5");
  ASSERT_EQ(back.scalars.size(), 3u);
  const auto& loss = back.scalars.at("train/loss");
  ASSERT_EQ(loss.size(), 3u);
  for (std::size_t i = 0; i < loss.size(); ++i) {
    EXPECT_EQ(loss[i].step, data.scalars["train/loss"][i].step);
    EXPECT_EQ(loss[i].wall_time, data.scalars["train/loss"][i].wall_time);
    EXPECT_EQ(loss[i].value, data.scalars["train/loss"][i].value);
  }
  EXPECT_TRUE(back.scalars.at("uniform/empty").empty());
  const auto& histograms = back.histograms.at("weights/fc1");
  ASSERT_EQ(histograms.size(), 2u);
  EXPECT_EQ(histograms[0].step, 3);
  EXPECT_EQ(histograms[0].counts, (std::vector<double>{2, 2, 2, 2, 2}));
  EXPECT_EQ(histograms[0].bin_edges.front(), 0.0);
  EXPECT_EQ(histograms[0].bin_edges.back(), 9.0);
  EXPECT_EQ(histograms[1].counts[2], 4.0);  // a constant tensor: one bin around its value

  // A resume at step 2 forgets what came after it.
  ql::core::MetricsData cut = back;
  cut.truncate_after(2);
  EXPECT_EQ(cut.scalars.at("train/loss").size(), 2u);
  EXPECT_TRUE(cut.scalars.at("valid/top1").empty());
  EXPECT_TRUE(cut.histograms.at("weights/fc1").empty());

  // A truncated file is an error that names it, not a crash.
  const auto bytes = ql::test::read_bytes(dir / "metrics.h5");
  ql::test::write_bytes(dir / "cut.h5", std::vector<std::uint8_t>(bytes.begin(), bytes.begin() + 700));
  try {
    ql::core::read_metrics_h5(dir / "cut.h5");
    ADD_FAILURE() << "a truncated metrics.h5 was read";
  } catch (const ql::Error& e) {
    EXPECT_NE(std::string(e.what()).find("cut.h5"), std::string::npos) << e.what();
  }
}

// bad-input: a corrupt `metrics.h5` (on resume or `qlhost report`) | `FILE: checksum mismatch …` / `not a QuantLab metrics file or truncated …` before HDF5 reads it; a crafted one whose dataset claims an absurd extent (found by fuzz_metrics_h5): `… claims N values, more than a file of M bytes can hold (corrupt?)` | 1
TEST(ResultsTest, AMetricsFileClaimingAnAbsurdExtentIsRefusedBeforeAllocating) {
  // The fuzzer's input, kept as a seed of its corpus: without a trailer it is refused at once;
  // sealed with a valid one (as a crafted file would be) the extent check refuses it.
  TempDir dir;
  const auto bytes = ql::test::read_bytes(QL_TEST_SOURCE_DIR "/fuzz/corpus/metrics_h5/regression-huge-extent");
  const std::string content(bytes.begin(), bytes.end());
  auto error_reading = [](const fs::path& file) {
    try {
      ql::core::read_metrics_h5(file);
    } catch (const ql::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  ql::test::write_bytes(dir / "bare.h5", bytes);
  EXPECT_NE(error_reading(dir / "bare.h5").find("not a QuantLab metrics file or truncated"), std::string::npos);
  const std::string sealed = content + ql::core::checksum_trailer("QLH5", content);
  ql::test::write_bytes(dir / "sealed.h5", std::vector<std::uint8_t>(sealed.begin(), sealed.end()));
  EXPECT_NE(error_reading(dir / "sealed.h5").find("more than a file of"), std::string::npos) << error_reading(dir / "sealed.h5");
}

TEST(ResultsTest, StorageComesFromTheFileThenTheEnvironmentThenTheUserFile) {
  TempDir dir;
  ScopedEnv config("QL_CONFIG", (dir / "user/storage.toml").string());
  ql::test::write_text(dir / "user/storage.toml", "[storage]\ndata = \"datasets\"\nlogs = \"/srv/results\"\n");
  const fs::path experiment = dir / "exps/exp.toml";
  {
    // Nothing in the file, no environment: the per-user file (relative to its folder).
    ScopedEnv data("QL_DATA", ""), logs("QL_LOGS", "");
    const auto paths = ql::core::resolve_storage(
        ql::test::config_from_toml("data = \"\"\nlogs = \"\"\n"), experiment);
    EXPECT_EQ(paths.data, dir / "user/datasets");
    EXPECT_EQ(paths.logs, fs::path("/srv/results"));
  }
  {
    ScopedEnv data("QL_DATA", "/env/data"), logs("QL_LOGS", "/env/logs");
    const auto from_env = ql::core::resolve_storage(
        ql::test::config_from_toml("data = \"\"\nlogs = \"\"\n"), experiment);
    EXPECT_EQ(from_env.data, fs::path("/env/data"));
    EXPECT_EQ(from_env.logs, fs::path("/env/logs"));
    EXPECT_EQ(from_env.logs_origin, "$QL_LOGS");
    // The experiment file wins; its relative paths start at its own folder.
    const auto from_file = ql::core::resolve_storage(
        ql::test::config_from_toml("data = \"../data\"\nlogs = \"results\"\n"), experiment);
    EXPECT_EQ(from_file.data, dir / "data");
    EXPECT_EQ(from_file.logs, dir / "exps/results");
  }
  ql::test::write_text(dir / "user/storage.toml", "[storage]\nlogz = \"x\"\n");
  EXPECT_THROW(ql::core::default_storage(), ql::ConfigError);
}

TEST(ResultsTest, GridsExpandToEveryCombination) {
  const auto combinations =
      ql::core::grid_combinations({"algorithm.0.bits=[2,3,4]", "training.optimizer.name=[\"sgd\",\"adam\"]"});
  ASSERT_EQ(combinations.size(), 6u);
  EXPECT_EQ(combinations[0], (std::vector<std::string>{"algorithm.0.bits=2", "training.optimizer.name='sgd'"}));
  EXPECT_EQ(combinations[5], (std::vector<std::string>{"algorithm.0.bits=4", "training.optimizer.name='adam'"}));
  EXPECT_THROW(ql::core::grid_combinations({"training.lr=0.1"}), ql::ConfigError);
  EXPECT_THROW(ql::core::grid_combinations({"training.lr=[]"}), ql::ConfigError);
  EXPECT_THROW(ql::core::grid_combinations({"=[1]"}), ql::ConfigError);
}

TEST(ResultsTest, UnitRecordRoundTripsAndSeesKilledRuns) {
  TempDir dir;
  ql::core::UnitRecord record;
  record.status = "running";
  record.pid = 999999;  // no such process
  record.host = ql::core::host_name();
  record.problem = "mnist";
  record.plugins.push_back({"problem", "mnist", "0.1.0", "sdk=0.1.0", "/x/mnist.so"});
  record.folds.resize(2);
  record.folds[1].epochs_done = 3;
  record.folds[1].trained_top1 = 0.875;
  ql::core::write_unit_record(dir.path(), record);
  const ql::core::UnitRecord back = ql::core::read_unit_record(dir.path());
  EXPECT_EQ(back.problem, "mnist");
  ASSERT_EQ(back.plugins.size(), 1u);
  EXPECT_EQ(back.plugins[0].file, "/x/mnist.so");
  ASSERT_EQ(back.folds.size(), 2u);
  EXPECT_EQ(back.folds[1].epochs_done, 3);
  EXPECT_EQ(back.folds[1].trained_top1, 0.875);
  EXPECT_EQ(back.live_status(), "killed");
  record.pid = ::getpid();
  ql::core::write_unit_record(dir.path(), record);
  EXPECT_EQ(ql::core::read_unit_record(dir.path()).live_status(), "running");
}
