// The ImageNet problem on a tiny JPEG folder tree written here: labels from folders and from a
// label file, pixel values after decoding, seeded augmentation, scaled decoding, corrupt files.
#include "plugins/problems/ilsvrc12/jpeg_decoder.hpp"
#include "plugins/problems/ilsvrc12/resample.hpp"
#include "quantlab/core/conformance.hpp"
#include "quantlab/core/experiment_config.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/problem.hpp"
#include "support/test_support.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/types.h>

namespace fs = std::filesystem;
using ql::ilsvrc12::decode_jpeg;
using ql::ilsvrc12::encode_jpeg;

namespace {

// A solid-colour image (decodes to the same colour, JPEG loses nothing of it) with a colour
// per class.
std::vector<std::uint8_t> solid(int width, int height, std::uint8_t r, std::uint8_t g, std::uint8_t b) {
  std::vector<std::uint8_t> rgb;
  for (int i = 0; i < width * height; ++i) rgb.insert(rgb.end(), {r, g, b});
  return encode_jpeg(rgb, width, height, 95);
}

const std::uint8_t kColours[3][3] = {{200, 100, 50}, {20, 220, 120}, {90, 90, 240}};

class Ilsvrc12Test : public ::testing::Test {
 protected:
  Ilsvrc12Test() : registry_(std::vector<fs::path>{QL_TEST_PLUGIN_DIR}) {
    const char* wnids[] = {"n01440764", "n01443537", "n01484850"};
    for (int c = 0; c < 3; ++c) {
      for (int i = 0; i < 4; ++i) {
        ql::test::write_bytes(dir_ / fmt::format("train/{}/img_{}.JPEG", wnids[c], i),
                              solid(120 + 10 * i, 90, kColours[c][0], kColours[c][1], kColours[c][2]));
      }
      ql::test::write_bytes(dir_ / fmt::format("val/{}/val_{}.JPEG", wnids[c], c),
                            solid(100, 80, kColours[c][0], kColours[c][1], kColours[c][2]));
    }
    ql::test::write_text(dir_ / "train/n01440764/readme.txt", "not an image, ignored");
  }

  ql::core::PluginPtr<ql::Problem> imagenet(std::vector<std::string> options) {
    options.insert(options.end(), {"data_dir=" + dir_.path().string(), "classes=3", "crop=32", "resize=40"});
    return registry_.create<ql::Problem>(
        "ilsvrc12", ql::core::plugin_options(registry_.find(ql::PluginKind::problem, "ilsvrc12"), options));
  }

  static at::Tensor normalised(int c) {
    const float mean[] = {0.485f, 0.456f, 0.406f}, std[] = {0.229f, 0.224f, 0.225f};
    std::vector<float> values;
    for (int k = 0; k < 3; ++k) values.push_back((kColours[c][k] / 255.0f - mean[k]) / std[k]);
    return torch::tensor(values).view({3, 1, 1}).expand({3, 32, 32});
  }

  ql::test::TempDir dir_;
  ql::core::PluginRegistry registry_;
};

}  // namespace

TEST_F(Ilsvrc12Test, LabelsComeFromSortedFoldersAndPixelsSurviveDecoding) {
  auto problem = imagenet({});
  EXPECT_EQ(problem->spec().input_shape, (std::vector<std::int64_t>{3, 32, 32}));
  auto train = problem->dataset(ql::Split::train, ql::stderr_log());
  ASSERT_EQ(train->size(), 12);
  EXPECT_EQ(problem->spec().class_names.at(2), "n01484850");
  const ql::Batch batch = train->get_batch(torch::tensor({0, 5, 11}, torch::kInt64), 0, false);
  EXPECT_TRUE(batch.targets.equal(torch::tensor({0, 1, 2}, torch::kInt64)));
  for (int k = 0; k < 3; ++k) {
    EXPECT_LT((batch.inputs[k] - normalised(k)).abs().max().item<float>(), 2.5f / 255 / 0.224f) << "class " << k;
  }
  // The input encoding (what an exported model starts with) normalises the bytes of the crop
  // as the data set normalises its resampled pixels.
  const std::optional<ql::InputEncoding> encoding = train->input_encoding();
  ASSERT_TRUE(encoding.has_value());
  ASSERT_EQ(encoding->steps.size(), 2u);
  for (int k = 0; k < 3; ++k) {
    at::Tensor pixel = torch::tensor({static_cast<float>(kColours[k][0]), static_cast<float>(kColours[k][1]),
                                      static_cast<float>(kColours[k][2])});
    pixel = (pixel - torch::tensor(encoding->steps[0].values)) * torch::tensor(encoding->steps[1].values);
    EXPECT_LT((pixel.view({3, 1, 1}) - normalised(k)).abs().max().item<float>(), 1e-5f) << "class " << k;
  }
  auto test = problem->dataset(ql::Split::test, ql::stderr_log());
  ASSERT_EQ(test->size(), 3);
  EXPECT_TRUE(test->get_batch(torch::arange(3, torch::kInt64), 0, false).targets.equal(torch::arange(3, torch::kInt64)));
}

TEST_F(Ilsvrc12Test, FlatValidationFolderWithALabelFile) {
  ql::test::write_bytes(dir_ / "flat/val/ILSVRC2012_val_00000001.JPEG", solid(64, 64, 20, 220, 120));
  ql::test::write_bytes(dir_ / "flat/val/ILSVRC2012_val_00000002.JPEG", solid(64, 64, 200, 100, 50));
  fs::create_directories(dir_ / "flat");
  fs::copy(dir_ / "train", dir_ / "flat/train", fs::copy_options::recursive);
  ql::test::write_text(dir_ / "labels.txt", "ILSVRC2012_val_00000001.JPEG n01443537\nILSVRC2012_val_00000002.JPEG 0\n");
  auto problem = registry_.create<ql::Problem>(
      "ilsvrc12", ql::core::plugin_options(registry_.find(ql::PluginKind::problem, "ilsvrc12"),
                                           {"data_dir=" + (dir_ / "flat").string(), "classes=3", "crop=32", "resize=40",
                                            "val_labels=" + (dir_ / "labels.txt").string()}));
  const ql::Batch batch = problem->dataset(ql::Split::test, ql::stderr_log())->get_batch(torch::arange(2, torch::kInt64), 0, false);
  EXPECT_TRUE(batch.targets.equal(torch::tensor({1, 0}, torch::kInt64)));
}

TEST_F(Ilsvrc12Test, AugmentationIsSeeded) {
  // A gradient image, so that crops and flips differ.
  std::vector<std::uint8_t> rgb;
  for (int y = 0; y < 90; ++y)
    for (int x = 0; x < 120; ++x) rgb.insert(rgb.end(), {static_cast<std::uint8_t>(2 * x), static_cast<std::uint8_t>(2 * y), 128});
  ql::test::write_bytes(dir_ / "train/n01440764/img_0.JPEG", encode_jpeg(rgb, 120, 90, 95));
  auto train = imagenet({})->dataset(ql::Split::train, ql::stderr_log());
  const at::Tensor index = torch::tensor({0, 0, 0, 0}, torch::kInt64);
  const ql::Batch a = train->get_batch(index, 5, true), b = train->get_batch(index, 5, true);
  EXPECT_TRUE(a.inputs.equal(b.inputs));
  EXPECT_FALSE(a.inputs.equal(train->get_batch(index, 6, true).inputs));
  EXPECT_FALSE(a.inputs[0].equal(a.inputs[1]));  // each image of a batch draws its own crop
}

TEST_F(Ilsvrc12Test, DecodesAtAReducedScaleWhenAsked) {
  const auto bytes = solid(800, 600, 10, 20, 30);
  ql::ilsvrc12::JpegImage image;
  std::string error;
  ASSERT_TRUE(decode_jpeg(bytes, [](int w, int h) { return ql::ilsvrc12::DecodePlan{w == 800 && h == 600 ? 2 : 8}; },
                          image, error))
      << error;
  EXPECT_EQ(image.width, 200);
  EXPECT_EQ(image.height, 150);
  EXPECT_EQ(image.full_width, 800);
  EXPECT_EQ(image.scale_eighths, 2);
  ASSERT_TRUE(decode_jpeg(bytes, [](int, int) { return ql::ilsvrc12::DecodePlan{3}; }, image, error)) << error;
  EXPECT_EQ(image.width, 300);  // 3/8 of 800
  EXPECT_NEAR(image.rgb[0], 10, 2);
  EXPECT_NEAR(image.rgb[2], 30, 2);
}

TEST_F(Ilsvrc12Test, DecodesOnlyThePartACropNeeds) {
  std::vector<std::uint8_t> rgb;
  for (int y = 0; y < 256; ++y)
    for (int x = 0; x < 320; ++x) rgb.insert(rgb.end(), {static_cast<std::uint8_t>(x / 2), static_cast<std::uint8_t>(y), 100});
  const auto bytes = encode_jpeg(rgb, 320, 256, 98);
  ql::ilsvrc12::JpegImage whole, part;
  std::string error;
  ASSERT_TRUE(decode_jpeg(bytes, [](int, int) { return ql::ilsvrc12::DecodePlan{}; }, whole, error)) << error;
  ASSERT_TRUE(decode_jpeg(bytes, [](int, int) { return ql::ilsvrc12::DecodePlan{8, 100, 60, 50, 40}; }, part, error))
      << error;
  EXPECT_EQ(part.y, 60);
  EXPECT_EQ(part.height, 40);
  EXPECT_LE(part.x, 100);                       // widened to block boundaries
  EXPECT_GE(part.x + part.width, 150);
  EXPECT_LT(part.width, 320);
  // The part holds the same pixels as the whole decode at the same place.
  for (int r = 0; r < part.height; r += 7) {
    for (int c = 0; c < part.width; c += 5) {
      for (int k = 0; k < 3; ++k) {
        const int a = part.rgb[static_cast<std::size_t>((r * part.width + c) * 3 + k)];
        const int b = whole.rgb[static_cast<std::size_t>(((r + part.y) * 320 + c + part.x) * 3 + k)];
        EXPECT_NEAR(a, b, 1) << r << "," << c;
      }
    }
  }
}

TEST(ResampleTest, MatchesATensAntialiasedBilinearWithWindowFlipAndNormalisation) {
  // Random bytes: the hardest content for a resampler (no smoothness to hide errors).
  const int width = 97, height = 61;
  const at::Tensor bytes = torch::randint(0, 256, {height, width, 3}, at::TensorOptions().dtype(torch::kUInt8));
  const float mean[3] = {120.0f, 110.0f, 100.0f}, inv_std[3] = {1 / 60.0f, 1 / 55.0f, 1 / 50.0f};
  struct Case {
    ql::ilsvrc12::SourceRegion region;
    int height, width, window_y, window_x, window_height, window_width;
    bool flip;
  };
  const Case cases[] = {
      {{0, 0, width, height}, 20, 31, 0, 0, 20, 31, false},       // shrink by 3 (wide triangles)
      {{10, 5, 40, 30}, 70, 90, 0, 0, 70, 90, true},              // enlarge (2 taps), flipped
      {{3, 2, 90, 25}, 40, 40, 0, 0, 40, 40, false},              // shrink one axis, enlarge the other
      {{0, 0, width, height}, 44, 70, 6, 17, 32, 32, false},      // eval: resize, then a centre window
      {{50, 30, 47, 31}, 17, 17, 0, 0, 17, 17, true},             // region at the image's corner
  };
  for (const Case& c : cases) {
    const auto& r = c.region;
    const at::Tensor part =
        bytes.slice(0, r.y, r.y + r.height).slice(1, r.x, r.x + r.width).permute({2, 0, 1}).to(torch::kFloat32).unsqueeze(0);
    at::Tensor expected = at::_upsample_bilinear2d_aa(part, {c.height, c.width}, false, c10::nullopt, c10::nullopt)[0]
                              .slice(1, c.window_y, c.window_y + c.window_height)
                              .slice(2, c.window_x, c.window_x + c.window_width);
    if (c.flip) expected = expected.flip({2});
    expected = (expected - torch::tensor({mean[0], mean[1], mean[2]}).view({3, 1, 1})) *
               torch::tensor({inv_std[0], inv_std[1], inv_std[2]}).view({3, 1, 1});
    at::Tensor actual = torch::full({3, c.window_height, c.window_width}, std::nanf(""));
    ql::ilsvrc12::resample_normalised(bytes.data_ptr<std::uint8_t>(), width, r,
                                      {actual.data_ptr<float>(), c.height, c.width, c.window_height, c.window_width,
                                       c.window_y, c.window_x, c.flip, mean, inv_std});
    // 1e-3 of a byte (after the division by ~55): float rounding, far below one grey level.
    EXPECT_LT((actual - expected).abs().max().item<float>(), 2e-5f)
        << c.height << "x" << c.width << " from " << r.height << "x" << r.width;
  }
}

// bad-input: a truncated JPEG or a GIF named `.JPEG` in an ImageNet folder | an error naming the file; with `on_corrupt = "skip"` the batch skips and counts it | 1
TEST_F(Ilsvrc12Test, CorruptFilesAreNamedOrSkipped) {
  auto bytes = ql::test::read_bytes(dir_ / "train/n01443537/img_1.JPEG");
  bytes.resize(bytes.size() / 2);
  ql::test::write_bytes(dir_ / "train/n01443537/img_1.JPEG", bytes);
  ql::test::write_text(dir_ / "train/n01443537/img_2.JPEG", "GIF89a not a jpeg");
  auto train = imagenet({})->dataset(ql::Split::train, ql::stderr_log());
  for (std::int64_t k : {5, 6}) {
    try {
      train->get_batch(torch::tensor({k}, torch::kInt64), 0, false);
      FAIL() << "expected an error for sample " << k;
    } catch (const ql::Error& e) {
      EXPECT_NE(std::string(e.what()).find(fmt::format("img_{}.JPEG", k - 4)), std::string::npos) << e.what();
    }
  }
  auto skipping = imagenet({"on_corrupt=\"skip\""})->dataset(ql::Split::train, ql::stderr_log());
  const ql::Batch batch = skipping->get_batch(torch::arange(12, torch::kInt64), 0, true);
  EXPECT_EQ(batch.inputs.size(0), 10);
  EXPECT_EQ(batch.targets.size(0), 10);
}

TEST_F(Ilsvrc12Test, SpecNeedsNoFilesAndWrongClassCountIsAnError) {
  auto problem = registry_.create<ql::Problem>(
      "ilsvrc12", ql::core::plugin_options(registry_.find(ql::PluginKind::problem, "ilsvrc12"), {}));
  EXPECT_EQ(problem->spec().num_classes, 1000);
  EXPECT_EQ(problem->spec().input_shape, (std::vector<std::int64_t>{3, 224, 224}));
  EXPECT_THROW(problem->dataset(ql::Split::train, ql::stderr_log()), ql::Error);
  auto wrong = registry_.create<ql::Problem>(
      "ilsvrc12", ql::core::plugin_options(registry_.find(ql::PluginKind::problem, "ilsvrc12"),
                                           {"data_dir=" + dir_.path().string(), "classes=5"}));
  EXPECT_THROW(wrong->dataset(ql::Split::train, ql::stderr_log()), ql::Error);
}

TEST_F(Ilsvrc12Test, PassesConformance) {
  const auto report = ql::core::check_conformance(
      registry_, registry_.find(ql::PluginKind::problem, "ilsvrc12"),
      {"data_dir=" + dir_.path().string(), "classes=3", "crop=32", "resize=40"});
  EXPECT_TRUE(report.passed()) << fmt::format("{}", fmt::join(report.lines, "\n"));
}
