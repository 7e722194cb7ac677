// The mnist problem: IDX reading (raw, gzip, every malformation) and the plugin's splits.
#include "plugins/problems/mnist/idx_file.hpp"
#include "quantlab/core/plugin_registry.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/problem.hpp"
#include "support/test_support.hpp"

#include <gtest/gtest.h>
#include <torch/types.h>

namespace fs = std::filesystem;
using ql::mnist::IdxArray;
using ql::mnist::read_idx;

namespace {

IdxArray sample_images() {
  IdxArray images{{3, 2, 2}, {}};
  for (int i = 0; i < 12; ++i) images.data.push_back(static_cast<std::uint8_t>(i * 20));
  return images;
}

std::string error_reading(const fs::path& path) {
  try {
    read_idx(path);
  } catch (const ql::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error reading " << path;
  return "";
}

constexpr char kOptionsFor[] = R"(
train_images = "train-images-idx3-ubyte"
train_labels = "train-labels-idx1-ubyte"
test_images = "t10k-images-idx3-ubyte"
test_labels = "t10k-labels-idx1-ubyte"
class_names = []
max_train_samples = 0
max_test_samples = 0
)";

ql::Config options(const fs::path& dir, const std::string& normalization = "unit", std::int64_t size = 6,
                   std::int64_t classes = 4) {
  return ql::test::config_from_toml(
      fmt::format("data_dir = \"{}\"\nnormalization = \"{}\"\nimage_size = [{}, {}]\nclasses = {}\n{}",
                  dir.string(), normalization, size, size, classes, kOptionsFor));
}

}  // namespace

TEST(IdxFileTest, ReadsRawAndGzipFilesAlike) {
  ql::test::TempDir dir;
  const auto bytes = ql::mnist::encode_idx(sample_images());
  ql::test::write_bytes(dir / "raw", bytes);
  ql::test::write_gzip(dir / "packed.gz", bytes);
  const IdxArray raw = read_idx(dir / "raw");
  const IdxArray packed = read_idx(dir / "packed.gz");
  EXPECT_EQ(raw.dims, (std::vector<std::int64_t>{3, 2, 2}));
  EXPECT_EQ(raw.data, sample_images().data);
  EXPECT_EQ(packed.dims, raw.dims);
  EXPECT_EQ(packed.data, raw.data);
}

TEST(IdxFileTest, TruncatedDataNamesTheFileAndTheShortfall) {
  ql::test::TempDir dir;
  auto bytes = ql::mnist::encode_idx(sample_images());
  bytes.resize(bytes.size() - 5);
  ql::test::write_bytes(dir / "cut", bytes);
  const std::string message = error_reading(dir / "cut");
  EXPECT_NE(message.find((dir / "cut").string()), std::string::npos) << message;
  EXPECT_NE(message.find("truncated"), std::string::npos) << message;
  EXPECT_NE(message.find("3x2x2"), std::string::npos) << message;
}

// bad-input: an IDX file cut inside its header | `FILE: truncated: 9 bytes, shorter than its 16-byte header` | 1
TEST(IdxFileTest, TruncatedHeaderIsAnError) {
  ql::test::TempDir dir;
  auto bytes = ql::mnist::encode_idx(sample_images());
  bytes.resize(9);
  ql::test::write_bytes(dir / "cut", bytes);
  EXPECT_NE(error_reading(dir / "cut").find("header"), std::string::npos);
  ql::test::write_bytes(dir / "tiny", {0, 0});
  EXPECT_NE(error_reading(dir / "tiny").find("truncated"), std::string::npos);
}

// bad-input: a cut gzip stream | `FILE: corrupt or truncated gzip data …` | 1
TEST(IdxFileTest, TruncatedGzipIsAnError) {
  ql::test::TempDir dir;
  ql::test::write_gzip(dir / "full.gz", ql::mnist::encode_idx(sample_images()));
  auto bytes = ql::test::read_bytes(dir / "full.gz");
  bytes.resize(bytes.size() / 2);
  ql::test::write_bytes(dir / "cut.gz", bytes);
  EXPECT_NE(error_reading(dir / "cut.gz").find("gzip"), std::string::npos);
}

// bad-input: an IDX file longer than its header says | `FILE: 13 bytes of data after the header, expected 12 for 3x2x2` | 1
TEST(IdxFileTest, ExtraBytesAreAnError) {
  ql::test::TempDir dir;
  auto bytes = ql::mnist::encode_idx(sample_images());
  bytes.push_back(1);
  ql::test::write_bytes(dir / "long", bytes);
  EXPECT_NE(error_reading(dir / "long").find("expected 12"), std::string::npos);
}

// bad-input: a file that is not IDX, or IDX of floats | `FILE: not an IDX file (magic …)`, `FILE: IDX element type 0x0d is not supported …` | 1
TEST(IdxFileTest, WrongMagicAndElementTypeAreErrors) {
  ql::test::TempDir dir;
  auto bytes = ql::mnist::encode_idx(sample_images());
  bytes[0] = 'P';
  ql::test::write_bytes(dir / "magic", bytes);
  EXPECT_NE(error_reading(dir / "magic").find("not an IDX file"), std::string::npos);
  bytes[0] = 0;
  bytes[2] = 0x0D;  // float
  ql::test::write_bytes(dir / "float", bytes);
  EXPECT_NE(error_reading(dir / "float").find("0x0d"), std::string::npos);
}

TEST(IdxFileTest, MissingFileIsAnError) {
  EXPECT_NE(error_reading("/nonexistent/train-images").find("cannot open"), std::string::npos);
}

class MnistPluginTest : public ::testing::Test {
 protected:
  MnistPluginTest() : registry_(std::vector<fs::path>{QL_TEST_PLUGIN_DIR}) {}
  ql::test::TempDir dir_;
  ql::core::PluginRegistry registry_;
};

// The problem gives the training and test files; holding out validation is the host's.
TEST_F(MnistPluginTest, SplitsAreTheFilesShapedAsTheSpecSays) {
  ql::test::write_idx_dataset(dir_.path(), 100, 30, 6, 4, /*gzip=*/true);
  auto problem = registry_.create<ql::Problem>("mnist", options(dir_.path()));
  const ql::DatasetSpec spec = problem->spec();
  EXPECT_EQ(spec.input_shape, (std::vector<std::int64_t>{1, 6, 6}));
  EXPECT_EQ(spec.num_classes, 4);
  EXPECT_EQ(spec.class_names.size(), 4u);
  auto train = problem->dataset(ql::Split::train, ql::stderr_log());
  auto test = problem->dataset(ql::Split::test, ql::stderr_log());
  ASSERT_TRUE(train && test);
  EXPECT_EQ(problem->dataset(ql::Split::valid, ql::stderr_log()), nullptr);
  EXPECT_EQ(train->size(), 100);
  EXPECT_EQ(test->size(), 30);
  const ql::Batch batch = train->get_batch(torch::arange(5, torch::kInt64), 0, true);
  EXPECT_EQ(batch.inputs.sizes(), (std::vector<std::int64_t>{5, 1, 6, 6}));
  EXPECT_EQ(batch.inputs.scalar_type(), torch::kFloat32);
  EXPECT_EQ(batch.targets.scalar_type(), torch::kInt64);
  EXPECT_LE(batch.inputs.max().item<float>(), 1.0f);  // unit normalisation
  EXPECT_GE(batch.inputs.min().item<float>(), 0.0f);
}

TEST_F(MnistPluginTest, StandardNormalisationCentresTheTrainingSplit) {
  ql::test::write_idx_dataset(dir_.path(), 100, 10, 6, 4, /*gzip=*/false);
  auto problem = registry_.create<ql::Problem>("mnist", options(dir_.path(), "standard"));
  const auto train = problem->dataset(ql::Split::train, ql::stderr_log());
  const ql::Batch batch = train->get_batch(torch::arange(train->size(), torch::kInt64), 0, false);
  EXPECT_NEAR(batch.inputs.mean().item<double>(), 0.0, 1e-4);
  EXPECT_NEAR(batch.inputs.std().item<double>(), 1.0, 1e-2);
}

TEST_F(MnistPluginTest, SpecNeedsNoFiles) {
  auto problem = registry_.create<ql::Problem>("mnist", options(dir_ / "nowhere", "unit", 28, 10));
  EXPECT_EQ(problem->spec().input_shape, (std::vector<std::int64_t>{1, 28, 28}));
  EXPECT_EQ(problem->spec().num_classes, 10);
  try {
    problem->dataset(ql::Split::train, ql::stderr_log());
    FAIL() << "expected an error";
  } catch (const ql::Error& e) {
    EXPECT_NE(std::string(e.what()).find("not found"), std::string::npos) << e.what();
  }
}

// bad-input: image and label files that disagree (size, count, label range) | `FILE: images of 6x6, but image_size = [8, 8]`, `label 3 is not below classes = 3`, `has 10 images but …` | 1
TEST_F(MnistPluginTest, FilesThatDisagreeWithEachOtherOrTheSpecAreErrorsNamingTheFile) {
  ql::test::write_idx_dataset(dir_.path(), 100, 10, 6, 4, /*gzip=*/false);
  auto error_of = [&](const ql::Config& config) -> std::string {
    try {
      registry_.create<ql::Problem>("mnist", config)->dataset(ql::Split::train, ql::stderr_log());
    } catch (const ql::Error& e) {
      return e.what();
    }
    ADD_FAILURE() << "no error";
    return "";
  };
  EXPECT_NE(error_of(options(dir_.path(), "unit", 8, 4)).find("images of 6x6, but image_size = [8, 8]"),
            std::string::npos);
  EXPECT_NE(error_of(options(dir_.path(), "unit", 6, 3)).find("label 3 is not below classes = 3"),
            std::string::npos);
  ql::test::write_bytes(dir_ / "t10k-labels-idx1-ubyte", ql::mnist::encode_idx({{9}, std::vector<std::uint8_t>(9, 1)}));
  EXPECT_NE(error_of(options(dir_.path())).find("has 10 images but"), std::string::npos);
}

TEST_F(MnistPluginTest, OutOfRangeOptionIsAConfigError) {
  ql::test::write_idx_dataset(dir_.path(), 20, 10, 6, 4, /*gzip=*/false);
  EXPECT_THROW(registry_.create<ql::Problem>("mnist", options(dir_.path(), "unit", 6, 1)), ql::ConfigError);
}
