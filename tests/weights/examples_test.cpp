// The shipped ImageNet experiments: they build torchvision's networks, and the GPFQ example runs
// unchanged but for its paths and sizes on generated JPEGs with a torchvision ResNet-18 state
// dict (tests/weights/make_imagenet_tree.py, make_torchvision_weights.py).
#include "quantlab/core/unit_record.hpp"
#include "support/test_support.hpp"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <utility>

namespace fs = std::filesystem;

namespace {

const fs::path kExamples = fs::path(QL_TEST_SOURCE_DIR) / "examples";

class ExamplesTest : public ::testing::Test {
 protected:
  ql::test::TempDir dir_;
};

// The ImageNet examples build torchvision's networks: `qlhost summary` (no data, no weights
// read) counts torchvision's parameters. (ExperimentConfigTest.EveryExampleLoads parses them all.)
TEST_F(ExamplesTest, TheImageNetExamplesBuildTorchvisionsNetworks) {
  for (const auto& [name, parameters] : {std::pair<std::string, std::string>{"imagenet_resnet18_gpfq.toml", "11,689,512"},
                                         {"imagenet_vgg16_gpfq.toml", "138,357,544"}}) {
    const auto summary = ql::test::run_qlhost("summary " + ql::test::quoted((kExamples / name).string()), dir_.path());
    EXPECT_EQ(summary.exit_code, 0) << name << "\n" << summary.out << summary.err;
    EXPECT_NE(summary.out.find(parameters), std::string::npos) << name << summary.out;
  }
}

// The published ImageNet configuration end to end, on 1,000 classes of noise: the torchvision
// file loads strictly, nothing trains, every layer gets a 17-atom alphabet (2^4 levels plus
// zero) and the unit records where the weights came from.
TEST_F(ExamplesTest, TheImageNetResNet18GpfqExampleRunsOnGeneratedJpegs) {
  const fs::path tree = dir_ / "imagenet", weights = dir_ / "weights";
  for (const std::string& command :
       {fmt::format("{} {}/tests/weights/make_imagenet_tree.py {} 1 12 2>&1", QL_TEST_PYTHON, QL_TEST_SOURCE_DIR,
                    ql::test::quoted(tree.string())),
        fmt::format("{} {}/tests/weights/make_torchvision_weights.py {} resnet18 2>&1", QL_TEST_PYTHON,
                    QL_TEST_SOURCE_DIR, ql::test::quoted(weights.string()))}) {
    const auto made = ql::test::run_command(command);
    ASSERT_EQ(made.exit_code, 0) << command << "\n" << made.out;
  }
  const std::vector<std::string> sets = {
      "storage.logs=" + (dir_ / "logs").string(), "problem.data_dir=" + tree.string(),
      "problem.val_labels=" + (tree / "val_labels.txt").string(), "topology.weights=" + (weights / "resnet18.pth").string(),
      // Smaller than the published run: 64-pixel crops, 8 calibration images, no variants.
      "problem.crop=64", "problem.resize=73", "training.eval_batch_size=6", "algorithm.greedy.calibration_samples=8",
      "algorithm.greedy.max_patches_per_image=16", "algorithm.greedy.sweep=false"};
  std::string args = "run " + ql::test::quoted((kExamples / "imagenet_resnet18_gpfq.toml").string());
  for (const std::string& set : sets) args += " --set " + ql::test::quoted(set);
  const auto run = ql::test::run_qlhost(args, dir_.path());
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_NE((run.out + run.err).find("quantised 21 layers with gpfq 4 bits C=1"), std::string::npos) << run.out << run.err;

  const fs::path unit = dir_ / "logs" / "ilsvrc12" / "resnet" / "exp0001";
  const ql::core::UnitRecord record = ql::core::read_unit_record(unit);
  EXPECT_EQ(record.status, "done");
  EXPECT_EQ(record.weights, (weights / "resnet18.pth").string());
  EXPECT_EQ(record.weights_sha256.size(), 64u);
  const auto check = ql::test::run_command(fmt::format("{} -c {} {}", QL_TEST_PYTHON, ql::test::quoted(R"(
import sys, h5py, numpy as np
h5 = h5py.File(sys.argv[1], 'r')
for name, group in h5.items():
    atoms = group['atoms'][()]
    assert len(atoms) == 17 and atoms[8] == 0 and np.allclose(atoms, -atoms[::-1]), (name, atoms)
print('layers', len(h5))
)"),
                                                       ql::test::quoted((unit / "fold0/greedy/quantized.h5").string())));
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  EXPECT_NE(check.out.find("layers 21\n"), std::string::npos) << check.out;
  EXPECT_TRUE(fs::exists(unit / "fold0" / "predictions.h5"));
}

}  // namespace
