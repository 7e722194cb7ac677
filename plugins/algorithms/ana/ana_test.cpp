// ANA (docs/algorithms/ana.md): staircases, the four noise families, the custom backward,
// the strategies, and both annealing schedules, checked against hand-computed values.
#include "plugins/algorithms/ana/ana_quantizer.hpp"
#include "plugins/algorithms/ana/ana_schedule.hpp"
#include "quantlab/sdk/error.hpp"
#include "support/test_support.hpp"

#include <gtest/gtest.h>

#include <fmt/format.h>
#include <torch/autograd.h>
#include <torch/types.h>

#include <cmath>

using namespace ql::ana;

namespace {

const Staircase kTernary = staircase_from_spec(2, true, true, 1.0);

at::Tensor gradient_of(const at::Tensor& x0, const AnaParameters& p, const Staircase& s = kTernary) {
  at::Tensor x = x0.clone().set_requires_grad(true);
  ana_quantize(x, s, p).sum().backward();
  return x.grad();
}

}  // namespace

TEST(AnaTest, SpecsGiveTheQuantlibLevels) {
  EXPECT_EQ(kTernary.levels, (std::vector<double>{-1, 0, 1}));
  EXPECT_EQ(kTernary.thresholds, (std::vector<double>{-0.5, 0.5}));
  const Staircase signed2 = staircase_from_spec(2, true, false, 0.5);
  EXPECT_EQ(signed2.levels, (std::vector<double>{-1.0, -0.5, 0.0, 0.5}));
  EXPECT_EQ(signed2.thresholds, (std::vector<double>{-0.75, -0.25, 0.25}));
  const Staircase unsigned1 = staircase_from_spec(1, false, false, 1.0);
  EXPECT_EQ(unsigned1.levels, (std::vector<double>{0, 1}));
  EXPECT_EQ(unsigned1.thresholds, (std::vector<double>{0.5}));
  EXPECT_THROW(staircase_from_lists({0.5}, {-1, 0, 1}), ql::Error);
  EXPECT_THROW(staircase_from_lists({0.5, -0.5}, {-1, 0, 1}), ql::Error);
}

TEST(AnaTest, UniformBackwardHalfIsTheClippedStraightThroughEstimator) {
  // ana.md, "Idea": uniform noise, ternary, backward σ 0.5 => J = 1 on [-1, 1], 0 outside.
  // (At x = 0 both closed windows |x -/+ 0.5| <= 0.5 meet and J = 2: a single point, as in the
  // reference's density; the test leaves it out.)
  const at::Tensor x = torch::tensor(std::vector<float>{-1.5, -1.0, -0.7, -0.5, 0.1, 0.3, 0.5, 0.99, 1.0, 1.01, 2.0});
  AnaParameters p{Noise::uniform, Strategy::expectation, 0.0, 0.0, 0.5};
  EXPECT_TRUE(torch::equal(gradient_of(x, p), torch::tensor(std::vector<float>{0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0})));
  // The forward with σ_fwd = 0 is the hard staircase (the clipped STE's forward).
  EXPECT_TRUE(torch::equal(ana_quantize(x, kTernary, p), torch::tensor(std::vector<float>{-1, -1, -1, 0, 0, 0, 1, 1, 1, 1, 1})))
      << ana_quantize(x, kTernary, p);
  // No backward noise, no gradient.
  p.backward_sigma = 0.0;
  EXPECT_TRUE(torch::equal(gradient_of(x, p), torch::zeros_like(x)));
}

TEST(AnaTest, SmallNoiseReproducesTheHardStaircase) {
  const at::Tensor x = torch::linspace(-2, 2, 401, torch::kFloat64);
  const at::Tensor hard = hard_staircase(x, kTernary);
  for (Noise noise : {Noise::uniform, Noise::triangular, Noise::normal, Noise::logistic}) {
    const AnaParameters p{noise, Strategy::expectation, 0.0, 1e-4, 1e-4};
    // Away from the thresholds themselves the expectation is the staircase.
    const at::Tensor away = ((x.abs() - 0.5).abs() > 1e-2);
    const at::Tensor y = ana_quantize(x, kTernary, p);
    EXPECT_LT((y - hard).abs().masked_select(away).max().item<double>(), 1e-6) << static_cast<int>(noise);
  }
  // Without autograd (validation, test) every quantiser is hard, whatever σ.
  torch::NoGradGuard no_grad;
  const AnaParameters noisy{Noise::normal, Strategy::expectation, 0.0, 0.5, 0.5};
  EXPECT_TRUE(torch::equal(ana_quantize(x, kTernary, noisy, /*noisy=*/false), hard));
}

TEST(AnaTest, ExpectationIsMonotoneContinuousAndItsGradientMatchesFiniteDifferences) {
  const at::Tensor x = torch::linspace(-2, 2, 4001, torch::kFloat64);
  for (Noise noise : {Noise::uniform, Noise::triangular, Noise::normal, Noise::logistic}) {
    for (double mu : {0.0, 0.2}) {
      const AnaParameters p{noise, Strategy::expectation, mu, 0.3, 0.3};
      const at::Tensor y = ana_quantize(x, kTernary, p).detach();
      const at::Tensor steps = y.diff();
      EXPECT_GE(steps.min().item<double>(), -1e-12) << "monotone";
      EXPECT_LT(steps.abs().max().item<double>(), 0.01) << "continuous: no jump on a 0.001 grid";
      // The custom backward is the derivative of the forward (central differences).
      const double h = 1e-5;
      const at::Tensor inner = x.slice(0, 1, -1);
      const at::Tensor numeric = (ana_quantize(inner + h, kTernary, p) - ana_quantize(inner - h, kTernary, p)) / (2 * h);
      const at::Tensor analytic = gradient_of(inner, p);
      // Uniform and triangular densities have kinks: compare away from them.
      at::Tensor smooth = torch::ones_like(inner, torch::kBool);
      for (double t : {-0.5, 0.5}) {
        for (double k : {-0.3, 0.0, 0.3}) smooth &= (inner - (t + mu + k)).abs() > 2e-3;
      }
      EXPECT_LT((numeric - analytic).abs().masked_select(smooth).max().item<double>(), 1e-4)
          << "noise " << static_cast<int>(noise) << " mu " << mu;
    }
  }
}

TEST(AnaTest, ModeAndRandomStrategiesGiveLevels) {
  torch::manual_seed(5);
  const at::Tensor x = torch::full({20000}, 0.3);
  const AnaParameters mode{Noise::uniform, Strategy::mode, 0.0, 0.5, 0.5};
  // P(step +0.5 on) at 0.3 = 0.3; P(step -0.5 on) = 1: pmf(-1) = 0, pmf(0) = 0.7, pmf(1) = 0.3.
  EXPECT_TRUE(torch::equal(ana_quantize(x, kTernary, mode), torch::zeros_like(x)));
  const AnaParameters random{Noise::uniform, Strategy::random, 0.0, 0.5, 0.5};
  const at::Tensor y = ana_quantize(x, kTernary, random);
  EXPECT_TRUE(((y == 0) | (y == 1)).all().item<bool>());
  EXPECT_NEAR((y == 1).to(torch::kFloat64).mean().item<double>(), 0.3, 0.02);
  // The random strategy is unbiased: its mean is the expectation.
  const AnaParameters expectation{Noise::uniform, Strategy::expectation, 0.0, 0.5, 0.5};
  EXPECT_NEAR(y.mean().item<double>(), ana_quantize(x, kTernary, expectation).mean().item<double>(), 0.02);
}

TEST(AnaTest, ThermostatTimersMatchHandComputedValues) {
  // t starts at 1 (epoch 0) in the 2019 format: linear over [50, 100] is 1 until t = 50.
  EXPECT_DOUBLE_EQ(thermostat_decay(Decay::linear, 1, 50, 50), 1.0);
  EXPECT_DOUBLE_EQ(thermostat_decay(Decay::linear, 50, 50, 50), 1.0);
  EXPECT_DOUBLE_EQ(thermostat_decay(Decay::linear, 75, 50, 50), 0.5);
  EXPECT_DOUBLE_EQ(thermostat_decay(Decay::linear, 100, 50, 50), 0.0);
  EXPECT_DOUBLE_EQ(thermostat_decay(Decay::quadratic, 75, 50, 50), 0.25);
  EXPECT_DOUBLE_EQ(thermostat_decay(Decay::constant, 1000, 0, 1), 1.0);
}

TEST(AnaTest, ControllerLawsMatchHandComputedValues) {
  // bws on [0, 200] with α 2: at t = 100, ((200 - 100) / 200)^2 = 0.25.
  const LawParameters bws{Law::bws, 0.5, 0.0, 200.0, 2.0, 0.0};
  EXPECT_DOUBLE_EQ(controller_value(bws, 0), 0.5);
  EXPECT_DOUBLE_EQ(controller_value(bws, 100), 0.125);
  EXPECT_DOUBLE_EQ(controller_value(bws, 250), 0.0);
  // uws from 10 with α 1: 1 / (t - 10 + 1); zero once below eps.
  const LawParameters uws{Law::uws, 2.0, 10.0, 0.0, 1.0, 0.1};
  EXPECT_DOUBLE_EQ(controller_value(uws, 3), 2.0);
  EXPECT_DOUBLE_EQ(controller_value(uws, 13), 0.5);
  EXPECT_DOUBLE_EQ(controller_value(uws, 30), 0.0);  // 1/21 < 0.1
  // The off-by-one between the formats: the first epoch is t = 1 for the thermostat and t = 0
  // for the controller, so a window [0, 10] anneals over epochs 0..9 in the first and 0..10 in
  // the second.
  EXPECT_DOUBLE_EQ(thermostat_decay(Decay::linear, /*epoch 9 ->*/ 10, 0, 10), 0.0);
  EXPECT_DOUBLE_EQ(controller_value({Law::bws, 1.0, 0.0, 10.0, 1.0, 0.0}, /*epoch 9 ->*/ 9), 0.1);
  EXPECT_THROW(parse_law("cubic"), ql::Error);
  EXPECT_EQ(parse_law("lws"), Law::bws);
}
