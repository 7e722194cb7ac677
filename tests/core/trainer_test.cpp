// The trainer's building blocks: seeded orders, the prefetching loader, schedules, evaluation.
#include "quantlab/core/batch_loader.hpp"
#include "quantlab/core/gradient_exchange.hpp"
#include "quantlab/core/trainer.hpp"
#include "quantlab/sdk/error.hpp"
#include "support/test_support.hpp"

#include <gtest/gtest.h>
#include <ATen/autocast_mode.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <chrono>
#include <numeric>
#include <set>
#include <thread>

namespace {

// Sample i has input i and target i % 3; optionally slow (as a decoding set) or failing on
// a given index.
class CountingDataset : public ql::Dataset {
 public:
  explicit CountingDataset(std::int64_t size, std::int64_t fail_at = -1, int delay_ms = 0)
      : size_(size), fail_at_(fail_at), delay_ms_(delay_ms) {}
  std::int64_t size() const override { return size_; }
  ql::Batch get_batch(const at::Tensor& indices, std::uint64_t seed, bool augment) const override {
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms_));
    QL_CHECK(fail_at_ < 0 || !indices.eq(fail_at_).any().item<bool>(), "sample {} is broken", fail_at_);
    ql::Batch batch;
    batch.inputs = indices.to(torch::kFloat32).unsqueeze(1) + (augment ? static_cast<double>(seed % 7) : 0.0);
    batch.targets = indices.remainder(3);
    return batch;
  }

 private:
  std::int64_t size_, fail_at_;
  int delay_ms_;
};

std::vector<std::int64_t> drain(ql::core::BatchLoader& loader) {
  std::vector<std::int64_t> seen;
  while (auto batch = loader.next()) {
    auto inputs = batch->inputs.squeeze(1).to(torch::kInt64);
    for (std::int64_t i = 0; i < inputs.size(0); ++i) seen.push_back(inputs[i].item<std::int64_t>());
  }
  return seen;
}

ql::core::TrainingSettings settings_from(const std::string& toml) {
  return ql::core::TrainingSettings::from(ql::test::config_from_toml(
      "epochs = 10\nbatch_size = 4\neval_batch_size = 4\nvalid_every = 1\ncheckpoint_every = 1\n"
      "checkpoint_every_steps = 0\nbest_metric = \"valid/top1\"\nfolds = 1\nsimulated_workers = 1\n"
      "valid_fraction = 0.1\nhold_out_seed = 1234\n"
      "drop_last = false\nloss = \"cross_entropy\"\n"
      "[optimizer]\nname = \"sgd\"\nlr = 1.0\nmomentum = 0.0\nnesterov = false\nweight_decay = 0.0\n"
      "betas = [0.9, 0.999]\neps = 1e-8\n" + toml));
}

}  // namespace

TEST(BatchLoaderTest, EpochOrderIsASeededPermutation) {
  const auto a = ql::core::epoch_order(1000, 42, 3);
  EXPECT_EQ(a, ql::core::epoch_order(1000, 42, 3));
  EXPECT_NE(a, ql::core::epoch_order(1000, 42, 4));
  EXPECT_NE(a, ql::core::epoch_order(1000, 43, 3));
  EXPECT_EQ(std::set<std::int64_t>(a.begin(), a.end()).size(), 1000u);
  EXPECT_NE(a, ql::core::sequential_order(1000));
}

TEST(BatchLoaderTest, CheapBatchesAreMadeWithoutAThread) {
  // A step of 20 ms: a batch (~0.1 ms) stays far below a twentieth of it even on a loaded machine.
  auto data = std::make_shared<CountingDataset>(500);
  ql::core::BatchLoader loader(data, ql::core::epoch_order(500, 1, 0), 10, 5, true, 4);
  std::vector<std::int64_t> seen;
  while (auto batch = loader.next()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the training step
    seen.push_back(batch->targets.size(0));
  }
  EXPECT_FALSE(loader.prefetching());
  EXPECT_EQ(seen.size(), 50u);
}

TEST(BatchLoaderTest, ExpensiveBatchesArePrefetchedAndIdenticalToInline) {
  auto slow = std::make_shared<CountingDataset>(103, -1, /*delay_ms=*/2);
  const auto order = ql::core::epoch_order(103, 1, 0);
  ql::core::BatchLoader inline_loader(slow, order, 10, 5, true, 0);
  ql::core::BatchLoader prefetching(slow, order, 10, 5, true, 3);
  EXPECT_EQ(inline_loader.batches(), 11);
  const auto expected = drain(inline_loader);
  EXPECT_FALSE(inline_loader.prefetching());
  EXPECT_EQ(drain(prefetching), expected);
  EXPECT_TRUE(prefetching.prefetching());
}

TEST(BatchLoaderTest, DropLastSkipsThePartialBatch) {
  auto data = std::make_shared<CountingDataset>(103);
  ql::core::BatchLoader loader(data, ql::core::sequential_order(103), 10, 0, false, 2, /*drop_last=*/true);
  EXPECT_EQ(loader.batches(), 10);
  EXPECT_EQ(drain(loader).size(), 100u);
}

TEST(BatchLoaderTest, FailureOnTheLoaderThreadReachesTheCaller) {
  auto data = std::make_shared<CountingDataset>(50, 37, /*delay_ms=*/2);
  ql::core::BatchLoader loader(data, ql::core::sequential_order(50), 10, 0, false, 2);
  EXPECT_THROW(drain(loader), ql::Error);
}

TEST(BatchLoaderTest, StoppingEarlyDoesNotHang) {
  auto data = std::make_shared<CountingDataset>(10000, -1, /*delay_ms=*/1);
  ql::core::BatchLoader loader(data, ql::core::sequential_order(10000), 10, 0, false, 2);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(loader.next().has_value());
  EXPECT_TRUE(loader.prefetching());
}

TEST(TrainerTest, StepScheduleDecaysEveryStepSizeEpochs) {
  const auto s = settings_from("[lr_schedule]\nname = \"step\"\nstep_size = 3\ngamma = 0.5\nmilestones = [1]\nmin_lr = 0.0\n");
  EXPECT_DOUBLE_EQ(ql::core::scheduled_lr(s, 0), 1.0);
  EXPECT_DOUBLE_EQ(ql::core::scheduled_lr(s, 2), 1.0);
  EXPECT_DOUBLE_EQ(ql::core::scheduled_lr(s, 3), 0.5);
  EXPECT_DOUBLE_EQ(ql::core::scheduled_lr(s, 7), 0.25);
}

TEST(TrainerTest, MultistepAndCosineSchedules) {
  auto s = settings_from("[lr_schedule]\nname = \"multistep\"\nstep_size = 3\ngamma = 0.1\nmilestones = [2, 5]\nmin_lr = 0.0\n");
  EXPECT_DOUBLE_EQ(ql::core::scheduled_lr(s, 1), 1.0);
  EXPECT_NEAR(ql::core::scheduled_lr(s, 2), 0.1, 1e-12);
  EXPECT_NEAR(ql::core::scheduled_lr(s, 6), 0.01, 1e-12);
  s = settings_from("[lr_schedule]\nname = \"cosine\"\nstep_size = 3\ngamma = 0.1\nmilestones = [2]\nmin_lr = 0.1\n");
  EXPECT_DOUBLE_EQ(ql::core::scheduled_lr(s, 0), 1.0);
  EXPECT_NEAR(ql::core::scheduled_lr(s, 5), 0.55, 1e-12);
}

TEST(TrainerTest, NesterovWithoutMomentumIsRejected) {
  EXPECT_THROW(ql::core::TrainingSettings::from(ql::test::config_from_toml(
                   "epochs = 1\nbatch_size = 4\neval_batch_size = 4\nvalid_every = 1\ncheckpoint_every = 1\n"
                   "drop_last = false\nloss = \"cross_entropy\"\n[optimizer]\nname = \"sgd\"\nlr = 1.0\n"
                   "momentum = 0.0\nnesterov = true\nweight_decay = 0.0\nbetas = [0.9, 0.999]\neps = 1e-8\n"
                   "[lr_schedule]\nname = \"constant\"\nstep_size = 1\ngamma = 0.1\nmilestones = []\nmin_lr = 0.0\n")),
               ql::ConfigError);
}

namespace {

class Affine : public ql::Network {
 public:
  Affine() { fc_ = register_module("fc", std::make_shared<ql::nn::Linear>(ql::nn::LinearOptions(1, 3))); }
  at::Tensor forward(const at::Tensor& x) override { return fc_->forward(x); }
  std::shared_ptr<ql::nn::Linear> fc_;
};

}  // namespace

TEST(TrainerTest, EvaluationCountsTopOneAndTopFive) {
  Affine net;
  {
    torch::NoGradGuard no_grad;
    net.fc_->weight.zero_();
    net.fc_->bias.copy_(torch::tensor({3.0, 2.0, 1.0}));  // always predicts class 0
  }
  auto data = std::make_shared<CountingDataset>(30);
  ql::core::BatchLoader loader(data, ql::core::sequential_order(30), 7, 0, false, 1);
  const ql::Evaluation e = ql::core::evaluate(net, loader, c10::kCPU, /*top5=*/true);
  EXPECT_EQ(e.samples, 30);
  EXPECT_DOUBLE_EQ(e.top1, 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(e.top5, 1.0);
  const double expected_loss =
      -(torch::log_softmax(torch::tensor({3.0, 2.0, 1.0}), 0).sum() / 3.0).item<double>();
  EXPECT_NEAR(e.loss, expected_loss, 1e-5);
}

// [run] precision = "bf16": the forward pass computes in bfloat16 (here the CPU's autocast,
// the same code path as CUDA's), the loss in fp32, and the autocast state is restored after.
TEST(TrainerTest, Bf16AutocastComputesTheForwardPassInBfloat16) {
  Affine net;
  {
    torch::NoGradGuard no_grad;
    net.fc_->weight.copy_(torch::tensor({0.1234567, -0.0456789, 0.0333333}).unsqueeze(1));
    net.fc_->bias.copy_(torch::tensor({0.3, 0.2, 0.1}));
  }
  auto data = std::make_shared<CountingDataset>(30);
  auto evaluate = [&](ql::core::Precision precision) {
    ql::core::BatchLoader loader(data, ql::core::sequential_order(30), 7, 0, false, 0);
    return ql::core::evaluate(net, loader, c10::kCPU, false, ql::core::LossKind::cross_entropy, precision);
  };
  const ql::Evaluation fp32 = evaluate(ql::core::Precision::fp32);
  const ql::Evaluation bf16 = evaluate(ql::core::Precision::bf16);
  EXPECT_FALSE(at::autocast::is_autocast_enabled(c10::kCPU));
  // bfloat16 keeps 8 bits of mantissa: close to fp32, never equal on these weights.
  EXPECT_NE(bf16.loss, fp32.loss);
  EXPECT_NEAR(bf16.loss, fp32.loss, 0.02 * fp32.loss);
  EXPECT_EQ(fp32.loss, evaluate(ql::core::Precision::fp32).loss) << "autocast leaked into a later fp32 pass";
}

TEST(TrainerTest, TrainingLowersTheLoss) {
  torch::manual_seed(0);
  Affine net;
  auto data = std::make_shared<CountingDataset>(12);
  const auto s = settings_from("[lr_schedule]\nname = \"constant\"\nstep_size = 1\ngamma = 0.1\nmilestones = []\nmin_lr = 0.0\n");
  auto optimizer = ql::core::make_optimizer(s, net.parameters());
  ql::core::set_lr(*optimizer, 0.01);
  double first = 0, last = 0;
  for (int epoch = 0; epoch < 30; ++epoch) {
    ql::core::BatchLoader loader(data, ql::core::epoch_order(12, 1, epoch), 4, 0, false, 1);
    auto exchange = ql::core::make_gradient_exchange(1, nullptr, nullptr);
    const auto stats = ql::core::train_epoch(net, *optimizer, loader, c10::kCPU, {}, *exchange, nullptr);
    if (epoch == 0) first = stats.loss();
    last = stats.loss();
    EXPECT_EQ(stats.samples, 12);
  }
  EXPECT_LT(last, first);
}

// Simulated workers without a codec average equal minibatch gradients: one step of 3 workers
// of 4 samples is one step on the batch of 12, and the exchange counts its step and spread.
TEST(TrainerTest, SimulatedWorkersAverageToTheWholeBatchsGradient) {
  auto data = std::make_shared<CountingDataset>(12);
  const auto s = settings_from("[lr_schedule]\nname = \"constant\"\nstep_size = 1\ngamma = 0.1\nmilestones = []\nmin_lr = 0.0\n");
  auto one_step = [&](std::int64_t batch_size, std::int64_t workers) {
    torch::manual_seed(0);
    auto net = std::make_shared<Affine>();
    auto optimizer = ql::core::make_optimizer(s, net->parameters());
    ql::core::set_lr(*optimizer, 0.1);
    ql::core::BatchLoader loader(data, ql::core::sequential_order(12), batch_size, 0, false, 0);
    auto exchange = ql::core::make_gradient_exchange(workers, nullptr, nullptr);
    const auto stats = ql::core::train_epoch(*net, *optimizer, loader, c10::kCPU, {}, *exchange, nullptr);
    EXPECT_EQ(stats.samples, 12);
    EXPECT_EQ(exchange->stats().steps, 1);
    return std::make_pair(net, exchange->stats());
  };
  const auto [whole, whole_stats] = one_step(12, 1);
  const auto [workers, worker_stats] = one_step(4, 3);
  const auto a = whole->parameters(), b = workers->parameters();
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::allclose(a[i], b[i], 1e-6, 1e-7)) << i;
  EXPECT_EQ(whole_stats.gradient_norm2, 0.0);  // the local exchange measures nothing
  EXPECT_GT(worker_stats.gradient_norm2, 0.0);
  EXPECT_GT(worker_stats.worker_spread2, 0.0);
}

// The one rule about mixing exchanges: simulated workers and data-parallel ranks do not.
TEST(TrainerTest, SimulatedWorkersAndDataParallelRanksDoNotMix) {
  EXPECT_THROW(ql::core::check_exchange_settings(4, /*data_parallel=*/true), ql::ConfigError);
  EXPECT_NO_THROW(ql::core::check_exchange_settings(4, false));
  EXPECT_NO_THROW(ql::core::check_exchange_settings(1, true));
}
