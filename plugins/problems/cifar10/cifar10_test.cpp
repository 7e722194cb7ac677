// The CIFAR problem: binary records written here, exact pixels and labels after loading,
// seeded crop-and-flip augmentation, CIFAR-100's two label bytes, truncated files.
#include "quantlab/core/conformance.hpp"
#include "quantlab/core/experiment_config.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/problem.hpp"
#include "support/test_support.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/types.h>

namespace fs = std::filesystem;

namespace {

// Image i of a file: pixel (c, y, x) = (i * 7 + c * 50 + y * 3 + x) mod 256; label i mod 10.
std::vector<std::uint8_t> records(std::int64_t count, std::int64_t first, bool cifar100) {
  std::vector<std::uint8_t> bytes;
  for (std::int64_t i = first; i < first + count; ++i) {
    if (cifar100) bytes.push_back(static_cast<std::uint8_t>(i % 20));  // coarse label
    bytes.push_back(static_cast<std::uint8_t>(cifar100 ? i % 100 : i % 10));
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) bytes.push_back(static_cast<std::uint8_t>((i * 7 + c * 50 + y * 3 + x) % 256));
  }
  return bytes;
}

at::Tensor expected_image(std::int64_t i) {
  at::Tensor image = torch::empty({3, 32, 32}, torch::kFloat32);
  auto a = image.accessor<float, 3>();
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 32; ++y)
      for (int x = 0; x < 32; ++x) a[c][y][x] = static_cast<float>((i * 7 + c * 50 + y * 3 + x) % 256) / 255.0f;
  return image;
}

class CifarTest : public ::testing::Test {
 protected:
  CifarTest() : registry_(std::vector<fs::path>{QL_TEST_PLUGIN_DIR}) {
    for (int b = 1; b <= 5; ++b) ql::test::write_bytes(dir_ / fmt::format("c10/data_batch_{}.bin", b), records(12, (b - 1) * 12, false));
    ql::test::write_bytes(dir_ / "c10/test_batch.bin", records(8, 1000, false));
    ql::test::write_bytes(dir_ / "c100/train.bin", records(30, 0, true));
    ql::test::write_bytes(dir_ / "c100/test.bin", records(5, 500, true));
  }

  ql::core::PluginPtr<ql::Problem> cifar(std::vector<std::string> options) {
    return registry_.create<ql::Problem>(
        "cifar10", ql::core::plugin_options(registry_.find(ql::PluginKind::problem, "cifar10"), options));
  }

  ql::test::TempDir dir_;
  ql::core::PluginRegistry registry_;
};

}  // namespace

TEST_F(CifarTest, LoadsExactPixelsAndLabelsInFileOrder) {
  auto problem = cifar({"data_dir=" + (dir_ / "c10").string(), "normalization=\"unit\""});
  EXPECT_EQ(problem->spec().input_shape, (std::vector<std::int64_t>{3, 32, 32}));
  EXPECT_EQ(problem->spec().class_names.at(9), "truck");
  auto train = problem->dataset(ql::Split::train, ql::stderr_log());
  ASSERT_EQ(train->size(), 60);
  const ql::Batch batch = train->get_batch(torch::tensor({0, 13, 59}, torch::kInt64), 0, false);
  EXPECT_TRUE(torch::allclose(batch.inputs[0], expected_image(0)));
  EXPECT_TRUE(torch::allclose(batch.inputs[1], expected_image(13)));  // second file, second record
  EXPECT_TRUE(torch::allclose(batch.inputs[2], expected_image(59)));
  EXPECT_TRUE(batch.targets.equal(torch::tensor({0, 3, 9}, torch::kInt64)));
  const ql::Batch test = problem->dataset(ql::Split::test, ql::stderr_log())->get_batch(torch::tensor({2}, torch::kInt64), 0, false);
  EXPECT_TRUE(torch::allclose(test.inputs[0], expected_image(1002)));
}

TEST_F(CifarTest, StandardNormalisationUsesTheUsualConstants) {
  auto problem = cifar({"data_dir=" + (dir_ / "c10").string()});
  const ql::Batch batch = problem->dataset(ql::Split::test, ql::stderr_log())->get_batch(torch::tensor({0}, torch::kInt64), 0, false);
  const at::Tensor mean = torch::tensor({0.4914f, 0.4822f, 0.4465f}).view({3, 1, 1});
  const at::Tensor std = torch::tensor({0.2470f, 0.2435f, 0.2616f}).view({3, 1, 1});
  EXPECT_TRUE(torch::allclose(batch.inputs[0], (expected_image(1000) - mean) / std, 1e-5, 1e-5));
}

TEST_F(CifarTest, AugmentationIsASeededCropOfThePaddedImageMaybeFlipped) {
  auto problem = cifar({"data_dir=" + (dir_ / "c10").string(), "normalization=\"unit\""});
  auto train = problem->dataset(ql::Split::train, ql::stderr_log());
  const at::Tensor index = torch::arange(16, torch::kInt64);
  const ql::Batch a = train->get_batch(index, 11, true), b = train->get_batch(index, 11, true);
  EXPECT_TRUE(a.inputs.equal(b.inputs));
  EXPECT_FALSE(a.inputs.equal(train->get_batch(index, 12, true).inputs));
  int flipped = 0, shifted = 0;
  for (std::int64_t i = 0; i < 16; ++i) {
    const at::Tensor padded = torch::constant_pad_nd(expected_image(i), {4, 4, 4, 4}, 0);
    bool found = false;
    for (int dy = 0; dy <= 8 && !found; ++dy) {
      for (int dx = 0; dx <= 8 && !found; ++dx) {
        const at::Tensor window = padded.slice(1, dy, dy + 32).slice(2, dx, dx + 32);
        for (bool flip : {false, true}) {
          if (torch::allclose(a.inputs[i], flip ? window.flip({2}) : window)) {
            found = true;
            flipped += flip;
            shifted += dy != 4 || dx != 4;
            break;
          }
        }
      }
    }
    EXPECT_TRUE(found) << "image " << i << " is no crop of its padded original";
  }
  EXPECT_GT(flipped, 0);
  EXPECT_GT(shifted, 0);
  EXPECT_TRUE(a.targets.equal(index.remainder(10)));
}

TEST_F(CifarTest, Cifar100UsesTheFineLabel) {
  auto problem = cifar({"data_dir=" + (dir_ / "c100").string(), "variant=\"cifar100\"",
                        "normalization=\"unit\""});
  EXPECT_EQ(problem->spec().num_classes, 100);
  const ql::Batch batch = problem->dataset(ql::Split::train, ql::stderr_log())->get_batch(torch::tensor({25}, torch::kInt64), 0, false);
  EXPECT_EQ(batch.targets[0].item<std::int64_t>(), 25);
  EXPECT_TRUE(torch::allclose(batch.inputs[0], expected_image(25)));
}

// The five training batches are the training split: the validation hold-out is the host's.
TEST_F(CifarTest, TrainingSplitIsEveryTrainingRecord) {
  auto problem = cifar({"data_dir=" + (dir_ / "c10").string(), "normalization=\"unit\""});
  EXPECT_EQ(problem->dataset(ql::Split::train, ql::stderr_log())->size(), 60);
  EXPECT_EQ(problem->dataset(ql::Split::valid, ql::stderr_log()), nullptr);
}

// bad-input: a truncated CIFAR batch file, or no data folder | `…/data_batch_3.bin: N bytes is not a whole number of 3073-byte records (truncated or not a CIFAR binary file?)` | 1
TEST_F(CifarTest, TruncatedFileAndMissingDirectoryAreErrorsNamingTheFile) {
  auto bytes = ql::test::read_bytes(dir_ / "c10/data_batch_3.bin");
  bytes.resize(bytes.size() - 100);
  ql::test::write_bytes(dir_ / "c10/data_batch_3.bin", bytes);
  try {
    cifar({"data_dir=" + (dir_ / "c10").string()})->dataset(ql::Split::train, ql::stderr_log());
    FAIL() << "expected an error";
  } catch (const ql::Error& e) {
    EXPECT_NE(std::string(e.what()).find("data_batch_3.bin"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("3073-byte records"), std::string::npos) << e.what();
  }
  EXPECT_THROW(cifar({})->dataset(ql::Split::train, ql::stderr_log()), ql::Error);
  EXPECT_EQ(cifar({})->spec().num_classes, 10);  // the spec needs no files
}

TEST_F(CifarTest, PassesConformance) {
  const auto report = ql::core::check_conformance(registry_, registry_.find(ql::PluginKind::problem, "cifar10"),
                                                  {"data_dir=" + (dir_ / "c10").string()});
  EXPECT_TRUE(report.passed()) << fmt::format("{}", fmt::join(report.lines, "\n"));
}
