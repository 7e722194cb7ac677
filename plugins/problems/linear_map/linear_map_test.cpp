// The linear_map problem: its spec, data that are a function of the seeds, targets that are an
// exact linear map of the inputs (noise = 0) or that map plus noise of the given size.
#include "quantlab/core/experiment_config.hpp"
#include "quantlab/core/plugin_registry.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/log.hpp"
#include "quantlab/sdk/problem.hpp"
#include "support/test_support.hpp"

#include <gtest/gtest.h>
#include <torch/types.h>

namespace {

class LinearMapTest : public ::testing::Test {
 protected:
  LinearMapTest() : registry_(std::vector<std::filesystem::path>{QL_TEST_PLUGIN_DIR}) {}

  ql::core::PluginPtr<ql::Problem> problem(const std::vector<std::string>& options) {
    return registry_.create<ql::Problem>(
        "linear_map", ql::core::plugin_options(registry_.find(ql::PluginKind::problem, "linear_map"), options));
  }
  static ql::Batch all(ql::Problem& p, ql::Split split) {
    const auto data = p.dataset(split, ql::stderr_log());
    return data->get_batch(torch::arange(data->size(), torch::kInt64), 0, false);
  }

  ql::core::PluginRegistry registry_;
};

TEST_F(LinearMapTest, SpecIsARegressionWithTheConfiguredSizes) {
  auto p = problem({"inputs=12", "outputs=5"});
  const ql::DatasetSpec spec = p->spec();
  EXPECT_EQ(spec.task, ql::Task::regression);
  EXPECT_EQ(spec.input_shape, std::vector<std::int64_t>{12});
  EXPECT_EQ(spec.target_size, 5);
  EXPECT_EQ(spec.num_classes, 0);
  EXPECT_EQ(spec.output_size(), 5);
  EXPECT_TRUE(p->metrics().empty());
  EXPECT_EQ(p->dataset(ql::Split::valid, ql::stderr_log()), nullptr);  // the host holds one out
}

// The targets are the inputs times one fixed matrix: least squares recovers it with no residual,
// and it is the same matrix for the test split.
TEST_F(LinearMapTest, TargetsAreOneLinearMapOfTheInputs) {
  auto p = problem({"inputs=16", "outputs=8", "train_samples=200", "test_samples=50"});
  const ql::Batch train = all(*p, ql::Split::train);
  const ql::Batch test = all(*p, ql::Split::test);
  ASSERT_EQ(train.inputs.sizes(), (c10::IntArrayRef{200, 16}));
  ASSERT_EQ(train.targets.sizes(), (c10::IntArrayRef{200, 8}));
  EXPECT_EQ(train.targets.scalar_type(), torch::kFloat32);
  const at::Tensor map = std::get<0>(at::linalg_lstsq(train.inputs.to(torch::kDouble), train.targets.to(torch::kDouble)));
  EXPECT_LT((train.inputs.to(torch::kDouble).matmul(map) - train.targets).abs().max().item<double>(), 1e-4);
  EXPECT_LT((test.inputs.to(torch::kDouble).matmul(map) - test.targets).abs().max().item<double>(), 1e-4);
  EXPECT_NEAR(map.std().item<double>(), 1.0, 0.2);  // entries N(0, 1)
  EXPECT_FALSE(train.inputs.slice(0, 0, 50).equal(test.inputs));  // the splits draw their own inputs
}

TEST_F(LinearMapTest, DataAreAFunctionOfTheSeeds) {
  const ql::Batch a = all(*problem({"inputs=8", "outputs=4", "train_samples=32"}), ql::Split::train);
  const ql::Batch b = all(*problem({"inputs=8", "outputs=4", "train_samples=32"}), ql::Split::train);
  const ql::Batch c = all(*problem({"inputs=8", "outputs=4", "train_samples=32", "map_seed=7"}), ql::Split::train);
  EXPECT_TRUE(a.inputs.equal(b.inputs));
  EXPECT_TRUE(a.targets.equal(b.targets));
  EXPECT_FALSE(a.targets.equal(c.targets));
}

// noise = s adds N(0, s²): the least-squares residual has about that variance.
TEST_F(LinearMapTest, NoiseAddsTheConfiguredVariance) {
  auto p = problem({"inputs=8", "outputs=8", "train_samples=4000", "noise=0.5"});
  const ql::Batch train = all(*p, ql::Split::train);
  const at::Tensor x = train.inputs.to(torch::kDouble), y = train.targets.to(torch::kDouble);
  const at::Tensor residual = y - x.matmul(std::get<0>(at::linalg_lstsq(x, y)));
  EXPECT_NEAR(residual.square().mean().item<double>(), 0.25, 0.02);
}

TEST_F(LinearMapTest, BadOptionsAreConfigErrorsNamingTheKey) {
  try {
    problem({"inputs=0"});
    FAIL() << "inputs = 0 was accepted";
  } catch (const ql::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("inputs"), std::string::npos) << e.what();
  }
  EXPECT_THROW(problem({"noise=-1.0"}), ql::ConfigError);
  EXPECT_THROW(problem({"inputs=65536", "outputs=65536", "train_samples=1000000"}), ql::Error);  // > 4 GiB
}

}  // namespace
