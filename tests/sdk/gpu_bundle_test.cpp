// make gpu-bundle: the folder a user copies to a GPU machine that has only PyTorch 2.11. Every
// library of every program and plugin resolves into the bundle, the venv's torch package or the
// C library (tools/bundle/check_gpu_bundle.sh, run by the bundling script); it fits 48 MiB; and
// its launcher runs an experiment with nothing but a python with torch named.
#include "support/test_support.hpp"

#include <gtest/gtest.h>

#include <fmt/format.h>

namespace fs = std::filesystem;
using ql::test::quoted;
using ql::test::run_command;

// bad-input: a GPU bundle started without a LibTorch to use (no QL_LIBTORCH, a python without torch) | `qlhost: LibTorch not found: set QL_LIBTORCH to a folder with lib/libtorch.so, or QL_PYTHON to a python whose torch is 2.11` | 2
TEST(GpuBundleTest, TheBundleResolvesEveryLibraryAndRunsWithOnlyTorchBesideIt) {
  ql::test::TempDir dir;
  const fs::path bundle = dir / "bundle";
  const auto made = run_command(fmt::format("{}/tools/bundle/make_gpu_bundle.sh {} {}", QL_TEST_SOURCE_DIR,
                                            quoted(QL_TEST_BUILD_DIR), quoted(bundle.string())));
  ASSERT_EQ(made.exit_code, 0) << made.out << made.err;
  EXPECT_NE(made.out.find("every library resolves"), std::string::npos) << made.out;
  EXPECT_NE(made.out.find("torch=2.11"), std::string::npos) << made.out;
  EXPECT_TRUE(fs::exists(bundle / "lib/quantlab/plugins/mnist.so"));
  EXPECT_TRUE(fs::exists(bundle / "lib/libfmt.so.9")) << "a library beyond LibTorch must travel with the bundle";

  ql::test::write_idx_dataset(dir / "data", 300, 60, 28, 4, /*gzip=*/false);
  ql::test::write_text(dir / "exp.toml", ql::test::small_mlp_experiment(3));
  const std::string python = QL_TEST_SOURCE_DIR "/.venv/bin/python";
  const auto run = run_command(fmt::format("cd {0} && env -i PATH=/usr/bin:/bin HOME={0} QL_PYTHON={1} {2} run exp.toml",
                                           quoted(dir.path().string()), quoted(python),
                                           quoted((bundle / "bin/qlhost").string())));
  EXPECT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_NE(run.out.find("trained network on test"), std::string::npos) << run.out;

  const auto no_torch = run_command(fmt::format("env -i PATH=/usr/bin:/bin QL_PYTHON=/bin/false {} --version",
                                                quoted((bundle / "bin/qlhost").string())));
  EXPECT_EQ(no_torch.exit_code, 2);
  EXPECT_NE(no_torch.err.find("LibTorch not found"), std::string::npos) << no_torch.err;
}
