// The uniform quantiser's exact values (docs/algorithms/uniform.md: the worked example and the three schemes).
#include "plugins/algorithms/uniform/uniform_quantizer.hpp"
#include "quantlab/sdk/error.hpp"

#include <gtest/gtest.h>
#include <torch/types.h>

using ql::uniform::UniformOptions;
using ql::uniform::UniformScheme;

namespace {

at::Tensor values(std::initializer_list<double> v) { return torch::tensor(std::vector<double>(v), torch::kFloat64); }

void expect_values(const at::Tensor& actual, std::initializer_list<double> expected) {
  ASSERT_EQ(actual.numel(), static_cast<std::int64_t>(expected.size()));
  std::size_t i = 0;
  for (double e : expected) EXPECT_NEAR(actual[static_cast<std::int64_t>(i++)].item<double>(), e, 1e-12) << "at " << i - 1;
}

}  // namespace

TEST(UniformQuantizerTest, QuantifindTwoBitsMatchesTheReference) {
  // s = 2/3; ints = clamp(round([-1.5, 0.75, 1.5]), -2, 1) = [-2, 1, 1] (half to even).
  const auto codes = ql::uniform::encode_uniform(values({-1, 0.5, 1}), {UniformScheme::quantifind, 2, false});
  EXPECT_TRUE(codes.codes.equal(torch::tensor({-2, 1, 1}, torch::kInt64)));
  EXPECT_NEAR(codes.scale.item<double>(), 2.0 / 3.0, 1e-15);
  expect_values(ql::uniform::quantize_uniform(values({-1, 0.5, 1}), {UniformScheme::quantifind, 2, false}),
                {-4.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0});
}

TEST(UniformQuantizerTest, QuantifindKeepsTheInputDtype) {
  const at::Tensor x = torch::tensor({-1.0f, 0.5f, 1.0f});
  const at::Tensor q = ql::uniform::quantize_uniform(x, {UniformScheme::quantifind, 2, false});
  EXPECT_EQ(q.scalar_type(), torch::kFloat32);
  EXPECT_NEAR(q[0].item<float>(), -4.0f / 3.0f, 1e-6);
}

TEST(UniformQuantizerTest, SymmetricGridIsBalanced) {
  // b = 3: s = 1/3, ints in [-3, 3].
  expect_values(ql::uniform::quantize_uniform(values({-1, 0.2, 1}), {UniformScheme::symmetric, 3, false}),
                {-1.0, 1.0 / 3.0, 1.0});
}

TEST(UniformQuantizerTest, AsymmetricGridUsesAZeroPoint) {
  // [-1, 2], b = 2: s = 1, z = 1, codes [0, 3]; 0.4 -> round(0.4) + 1 = 1 -> 0.
  const auto codes = ql::uniform::encode_uniform(values({-1, 0.4, 2}), {UniformScheme::asymmetric, 2, false});
  EXPECT_TRUE(codes.codes.equal(torch::tensor({0, 1, 3}, torch::kInt64)));
  EXPECT_EQ(codes.zero_point.item<std::int64_t>(), 1);
  expect_values(ql::uniform::quantize_uniform(values({-1, 0.4, 2}), {UniformScheme::asymmetric, 2, false}),
                {-1.0, 0.0, 2.0});
}

TEST(UniformQuantizerTest, PerChannelScalesEachRow) {
  const at::Tensor w = torch::tensor({{-1.0, 0.5, 1.0}, {-10.0, 5.0, 10.0}}, torch::kFloat64);
  const at::Tensor q = ql::uniform::quantize_uniform(w, {UniformScheme::quantifind, 2, true});
  expect_values(q[0], {-4.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0});
  expect_values(q[1], {-40.0 / 3.0, 20.0 / 3.0, 20.0 / 3.0});
  // Per tensor, the small row collapses to the grid of the large one.
  const at::Tensor per_tensor = ql::uniform::quantize_uniform(w, {UniformScheme::quantifind, 2, false});
  expect_values(per_tensor[0], {0.0, 0.0, 0.0});
}

TEST(UniformQuantizerTest, ZeroRangeStaysAsItIsWithoutNaN) {
  for (auto scheme : {UniformScheme::quantifind, UniformScheme::symmetric, UniformScheme::asymmetric}) {
    expect_values(ql::uniform::quantize_uniform(values({0, 0, 0}), {scheme, 4, false}), {0, 0, 0});
  }
  expect_values(ql::uniform::quantize_uniform(values({2.5, 2.5}), {UniformScheme::asymmetric, 4, false}), {2.5, 2.5});
}

TEST(UniformQuantizerTest, ErrorShrinksWithBitsAndStaysWithinHalfAStep) {
  torch::manual_seed(3);
  const at::Tensor x = torch::randn({1000}, torch::kFloat64);
  double previous = INFINITY;
  for (int bits = 2; bits <= 16; ++bits) {
    const UniformOptions options{UniformScheme::symmetric, bits, false};
    const at::Tensor error = (ql::uniform::quantize_uniform(x, options) - x).abs();
    const double step = ql::uniform::encode_uniform(x, options).scale.item<double>();
    EXPECT_LE(error.max().item<double>(), step / 2 + 1e-12) << bits << " bits";
    EXPECT_LT(error.mean().item<double>(), previous);
    previous = error.mean().item<double>();
  }
}

TEST(UniformQuantizerTest, NumberOfDistinctLevelsIsBounded) {
  torch::manual_seed(4);
  const at::Tensor x = torch::randn({5000}, torch::kFloat64);
  for (int bits : {2, 3, 4}) {
    EXPECT_LE(std::get<0>(at::_unique(ql::uniform::quantize_uniform(x, {UniformScheme::quantifind, bits, false}))).numel(),
              1 << bits);
    EXPECT_LE(std::get<0>(at::_unique(ql::uniform::quantize_uniform(x, {UniformScheme::symmetric, bits, false}))).numel(),
              (1 << bits) - 1);
  }
}

TEST(UniformQuantizerTest, BitsOutsideTwoToThirtyTwoAreRejected) {
  EXPECT_THROW(ql::uniform::quantize_uniform(values({1}), {UniformScheme::quantifind, 1, false}), ql::Error);
  EXPECT_THROW(ql::uniform::quantize_uniform(values({1}), {UniformScheme::quantifind, 33, false}), ql::Error);
}
