// What must hold on a GPU, with real qlhost processes: every algorithm trains and post-trains
// on CUDA, a unit stopped on the GPU resumes on the CPU and the other way round, bf16 autocast
// trains as well as fp32, and a deterministic run repeats bit for bit. Without a GPU each test
// skips, saying so; bench/gpu/check.sh runs them on a GPU machine. QL_CUDA_TEST_DEVICE=cpu runs
// them on the CPU instead, to check the tests themselves.
#include "quantlab/core/process.hpp"
#include "support/test_support.hpp"

#include <gtest/gtest.h>

#include <fmt/format.h>
#include <torch/cuda.h>
#include <torch/types.h>

#include <csignal>
#include <cstdlib>

namespace fs = std::filesystem;
using ql::test::quoted;

namespace {

// ANA with ternary weights on both layers of the small MLP, its noise annealed over the epochs.
constexpr char kAna[] =
    "[[algorithm]]\nplugin = \"ana\"\nnbits = 2\nsigned = true\nbalanced = true\nnoise = \"uniform\"\n"
    "schedule = \"thermostat\"\ngroups = [\"fc1 act1\", \"classifier\"]\nforward_sigma = [0.5]\nforward_decay = [\"linear\"]\n"
    "forward_start = [0.0, 1.0]\nforward_length = [1.0]\nbackward_sigma = [0.5]\nbackward_decay = [\"constant\"]\n";

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const char* chosen = std::getenv("QL_CUDA_TEST_DEVICE"); chosen != nullptr && *chosen != '\0') device_ = chosen;
    if (device_ == "cuda" && !torch::cuda::is_available()) {
      GTEST_SKIP() << "LibTorch sees no CUDA device here; bench/gpu/check.sh runs this on a GPU machine";
    }
    ql::test::write_idx_dataset(dir_ / "data", 1010, 200, 28, 4, /*gzip=*/false);
  }

  // The small MLP experiment of the CPU tests on `device`, with `extra` TOML appended.
  void write_experiment(const std::string& device, const std::string& extra = "") const {
    std::string text = ql::test::small_mlp_experiment(5);
    text.replace(text.find("[run]\n"), 6, fmt::format("[run]\ndevice = \"{}\"\n", device));
    ql::test::write_text(dir_ / "exp.toml", text + extra);
  }

  ql::test::CommandResult qlhost(const std::string& extra) const {
    return ql::test::run_command(fmt::format("cd {} && HOME={} QL_PLUGIN_PATH= {} run exp.toml {}",
                                             quoted(dir_.path().string()), quoted(dir_.path().string()),
                                             quoted(ql::test::qlhost_program()), extra));
  }

  fs::path unit(int number) const { return dir_ / fmt::format("logs/mnist/mlp/exp{:04d}", number); }

  // Runs unit `number` and stops it with SIGINT once 20 steps are checkpointed.
  void run_and_stop(int number) const {
    ::setenv("HOME", dir_.path().c_str(), 1);
    ::setenv("QL_PLUGIN_PATH", "", 1);
    const fs::path here = fs::current_path();
    fs::current_path(dir_.path());
    const pid_t child = ql::core::spawn({ql::test::qlhost_program(), "run", "exp.toml"}, dir_ / "stopped.log");
    const bool reached = ql::test::wait_for_checkpointed_steps(unit(number), 20);
    ::kill(child, SIGINT);
    fs::current_path(here);
    ASSERT_TRUE(reached) << ql::test::read_text(dir_ / "stopped.log");
    ASSERT_EQ(ql::core::wait_for(child), 130) << ql::test::read_text(dir_ / "stopped.log");
  }

  // The test top-1 (in %) of the last "top1" a run printed.
  static double last_top1(const std::string& out) {
    const auto at = out.rfind("top1 ");
    return at == std::string::npos ? -1.0 : std::stod(out.substr(at + 5));
  }

  // What the run's first line names: "device cuda:0" for "cuda".
  std::string device_line() const { return "device " + (device_ == "cuda" ? std::string("cuda:0") : device_); }

  std::string device_ = "cuda";
  ql::test::TempDir dir_;
};

}  // namespace

TEST_F(CudaTest, EveryAlgorithmTrainsAndPostTrainsOnTheGpu) {
  const char* algorithms[] = {
      "[[algorithm]]\nplugin = \"uniform\"\nbits = 4\nmin_bits = 2\nmax_bits = 4\n",
      "[[algorithm]]\nplugin = \"greedy\"\nmethod = \"gpfq\"\nbits = 2\ncalibration_samples = 256\n", kAna,
      "[[algorithm]]\nplugin = \"nuqsgd\"\nscheme = \"nuq\"\nbits = 3\nbucket_size = 512\n"};
  for (const char* algorithm : algorithms) {
    write_experiment(device_, algorithm);
    const auto run = qlhost(std::string(algorithm).find("nuqsgd") != std::string::npos
                                ? "--set training.simulated_workers=2"
                                : "");
    EXPECT_EQ(run.exit_code, 0) << algorithm << run.out << run.err;
    EXPECT_NE(run.out.find(device_line()), std::string::npos) << run.out;
    EXPECT_GT(last_top1(run.out), 35.0) << algorithm << run.out;  // 4 classes: chance is 25 %
  }
}

TEST_F(CudaTest, AUnitStoppedOnTheGpuResumesOnTheCpuAndBack) {
  write_experiment(device_);
  run_and_stop(1);
  const auto on_cpu = qlhost("--resume --set run.device=cpu");
  ASSERT_EQ(on_cpu.exit_code, 0) << on_cpu.out << on_cpu.err;
  EXPECT_NE(on_cpu.out.find("device cpu"), std::string::npos) << on_cpu.out;

  write_experiment("cpu");
  run_and_stop(2);
  const auto on_gpu = qlhost("--resume exp0002 --set run.device=" + device_);
  ASSERT_EQ(on_gpu.exit_code, 0) << on_gpu.out << on_gpu.err;
  EXPECT_NE(on_gpu.out.find(device_line()), std::string::npos) << on_gpu.out;
}

// ANA draws its noise from the GPU's generator: a resumed GPU unit must continue its stream.
TEST_F(CudaTest, AStoppedGpuUnitResumesToTheWeightsOfAnUninterruptedRun) {
  write_experiment(device_, kAna);
  ASSERT_EQ(qlhost("").exit_code, 0);
  run_and_stop(2);
  const auto resumed = qlhost("--resume exp0002");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.out << resumed.err;
  const auto a = ql::test::checkpoint_model(unit(1) / "fold0/checkpoints/last.pt");
  const auto b = ql::test::checkpoint_model(unit(2) / "fold0/checkpoints/last.pt");
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [key, value] : a) EXPECT_TRUE(torch::equal(value, b.at(key))) << key;
}

TEST_F(CudaTest, Bf16AutocastTrainsAsWellAsFp32) {
  write_experiment(device_, "[[algorithm]]\nplugin = \"uniform\"\nbits = 8\n");
  const auto fp32 = qlhost("--set run.deterministic=false");
  const auto bf16 = qlhost("--set run.deterministic=false --set run.precision=bf16");
  ASSERT_EQ(fp32.exit_code, 0) << fp32.err;
  ASSERT_EQ(bf16.exit_code, 0) << bf16.err;
  EXPECT_NE(bf16.out.find("(bf16 autocast)"), std::string::npos) << bf16.out;
  EXPECT_NEAR(last_top1(bf16.out), last_top1(fp32.out), 5.0) << fp32.out << bf16.out;
}

TEST_F(CudaTest, ADeterministicGpuRunRepeatsExactly) {
  write_experiment(device_);
  ASSERT_EQ(qlhost("").exit_code, 0);
  ASSERT_EQ(qlhost("").exit_code, 0);
  const auto a = ql::test::checkpoint_model(unit(1) / "fold0/checkpoints/last.pt");
  const auto b = ql::test::checkpoint_model(unit(2) / "fold0/checkpoints/last.pt");
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [key, value] : a) EXPECT_TRUE(torch::equal(value, b.at(key))) << key;
}
