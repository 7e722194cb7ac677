#include "quantlab/core/trainer.hpp"

#include "quantlab/core/gradient_exchange.hpp"

#include "quantlab/sdk/error.hpp"

#include <ATen/autocast_mode.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <fmt/format.h>

#include <chrono>
#include <cmath>

namespace ql::core {

TrainingSettings TrainingSettings::from(const Config& training, Task task) {
  const bool regression = task == Task::regression;
  TrainingSettings s;
  s.epochs = training.get_int("epochs", 0, 1'000'000);
  s.batch_size = training.get_int("batch_size", 1, 1 << 24);
  s.eval_batch_size = training.get_int("eval_batch_size", 1, 1 << 24);
  s.valid_every = training.get_int("valid_every", 1, 1'000'000);
  s.checkpoint_every = training.get_int("checkpoint_every", 1, 1'000'000);
  s.checkpoint_every_steps = training.get_int("checkpoint_every_steps", 0, INT64_MAX);
  const BestMetric task_metric = regression ? BestMetric::valid_loss : BestMetric::valid_top1;
  s.best_metric = training.get_enum<BestMetric>(
      "best_metric", {{"auto", task_metric}, {"valid/top1", BestMetric::valid_top1}, {"valid/loss", BestMetric::valid_loss}});
  if (regression && s.best_metric == BestMetric::valid_top1) {
    throw ConfigError(training.error_message("best_metric", "a regression problem has no top-1: use valid/loss or auto"));
  }
  s.folds = training.get_int("folds", 1, 1000);
  s.valid_fraction = training.get_double("valid_fraction", 0.0, 0.9);
  s.hold_out_seed = static_cast<std::uint64_t>(training.get_int("hold_out_seed", 0, INT64_MAX));
  s.drop_last = training.get_bool("drop_last");
  s.simulated_workers = training.get_int("simulated_workers", 1, 1024);
  const LossKind task_loss = regression ? LossKind::mean_squared_error : LossKind::cross_entropy;
  s.loss = training.get_enum<LossKind>("loss", {{"auto", task_loss},
                                                {"cross_entropy", LossKind::cross_entropy},
                                                {"hinge", LossKind::hinge},
                                                {"squared_hinge", LossKind::squared_hinge},
                                                {"mean_squared_error", LossKind::mean_squared_error}});
  if (is_classification(s.loss) == regression) {
    throw ConfigError(training.error_message(
        "loss", regression ? "the problem is a regression: its loss is mean_squared_error (or auto)"
                           : "the problem is a classification: mean_squared_error needs real-valued targets"));
  }

  const Config optimizer = training.table("optimizer");
  s.optimizer = optimizer.get_enum<OptimizerKind>("name", {{"sgd", OptimizerKind::sgd},
                                            {"adam", OptimizerKind::adam},
                                            {"adamw", OptimizerKind::adamw}});
  s.lr = optimizer.get_double("lr", 0.0, 1e6);
  s.momentum = optimizer.get_double("momentum", 0.0, 1.0);
  s.nesterov = optimizer.get_bool("nesterov");
  if (s.optimizer == OptimizerKind::sgd && s.nesterov && s.momentum <= 0.0) {
    throw ConfigError(optimizer.error_message("nesterov", "Nesterov momentum needs momentum > 0"));
  }
  s.weight_decay = optimizer.get_double("weight_decay", 0.0, 1e6);
  s.betas = optimizer.get_double_list("betas");
  if (s.betas.size() != 2 || s.betas[0] < 0 || s.betas[0] >= 1 || s.betas[1] < 0 || s.betas[1] >= 1) {
    throw ConfigError(optimizer.error_message("betas", "expected two numbers in [0, 1)"));
  }
  s.eps = optimizer.get_double("eps", 0.0, 1.0);

  const Config schedule = training.table("lr_schedule");
  s.schedule = schedule.get_enum<ScheduleKind>("name", {{"constant", ScheduleKind::constant},
                                          {"step", ScheduleKind::step},
                                          {"multistep", ScheduleKind::multistep},
                                          {"cosine", ScheduleKind::cosine}});
  s.step_size = schedule.get_int("step_size", 1, 1'000'000);
  s.gamma = schedule.get_double("gamma", 0.0, 1e6);
  s.milestones = schedule.get_int_list("milestones");
  for (std::size_t i = 0; i < s.milestones.size(); ++i) {
    if (s.milestones[i] < 0 || (i > 0 && s.milestones[i] <= s.milestones[i - 1])) {
      throw ConfigError(schedule.error_message("milestones", "expected increasing epochs >= 0"));
    }
  }
  s.min_lr = schedule.get_double("min_lr", 0.0, 1e6);
  return s;
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const TrainingSettings& s,
                                                        const std::vector<at::Tensor>& parameters) {
  if (s.optimizer == OptimizerKind::sgd) {
    return std::make_unique<torch::optim::SGD>(
        parameters, torch::optim::SGDOptions(s.lr).momentum(s.momentum).nesterov(s.nesterov)
                        .weight_decay(s.weight_decay));
  }
  if (s.optimizer == OptimizerKind::adamw) {
    return std::make_unique<torch::optim::AdamW>(
        parameters, torch::optim::AdamWOptions(s.lr).betas({s.betas[0], s.betas[1]}).eps(s.eps)
                        .weight_decay(s.weight_decay));
  }
  return std::make_unique<torch::optim::Adam>(
      parameters, torch::optim::AdamOptions(s.lr).betas({s.betas[0], s.betas[1]}).eps(s.eps)
                      .weight_decay(s.weight_decay));
}

double scheduled_lr(const TrainingSettings& s, std::int64_t epoch) {
  if (s.schedule == ScheduleKind::step) return s.lr * std::pow(s.gamma, static_cast<double>(epoch / s.step_size));
  if (s.schedule == ScheduleKind::multistep) {
    double lr = s.lr;
    for (std::int64_t milestone : s.milestones) {
      if (epoch >= milestone) lr *= s.gamma;
    }
    return lr;
  }
  if (s.schedule == ScheduleKind::cosine && s.epochs > 0) {
    const double progress = static_cast<double>(epoch) / static_cast<double>(s.epochs);
    return s.min_lr + (s.lr - s.min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
  }
  return s.lr;
}

void set_lr(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

namespace {

using Clock = std::chrono::steady_clock;

void check_finite(double loss, std::int64_t batch) {
  if (!std::isfinite(loss)) throw NonFiniteLoss(fmt::format("the training loss became {}", loss), batch);
}

}  // namespace

bool is_classification(LossKind kind) { return kind != LossKind::mean_squared_error; }

at::Tensor batch_loss(const at::Tensor& logits, const at::Tensor& targets, LossKind kind, bool sum) {
  namespace F = torch::nn::functional;
  if (kind == LossKind::mean_squared_error) {
    const at::Tensor per_sample = (logits - targets.to(logits.scalar_type())).square().flatten(1).mean(1);
    return sum ? per_sample.sum() : per_sample.mean();
  }
  if (kind == LossKind::cross_entropy) {
    if (sum) return F::cross_entropy(logits, targets, F::CrossEntropyFuncOptions().reduction(torch::kSum));
    return F::cross_entropy(logits, targets);
  }
  const at::Tensor signs = torch::one_hot(targets, logits.size(1)).to(logits.scalar_type()) * 2 - 1;
  at::Tensor margins = (1 - signs * logits).clamp_min(0);
  if (kind == LossKind::squared_hinge) margins = margins.square();
  const at::Tensor per_sample = margins.mean(1);
  return sum ? per_sample.sum() : per_sample.mean();
}

namespace {

// Up to `count` batches from `loader`.
std::vector<Batch> next_batches(BatchLoader& loader, std::int64_t count) {
  std::vector<Batch> batches;
  while (static_cast<std::int64_t>(batches.size()) < count) {
    std::optional<Batch> batch = loader.next();
    if (!batch) break;
    batches.push_back(std::move(*batch));
  }
  return batches;
}

// Forward, loss and backward of one minibatch; its totals.
StepTotals forward_backward(Network& network, const Batch& batch, c10::Device device, const StepOptions& options) {
  // Pinned batches (BatchLoader::pin_memory) copy while the device still computes.
  const at::Tensor inputs = batch.inputs.to(device, /*non_blocking=*/true);
  const at::Tensor targets = batch.targets.to(device, /*non_blocking=*/true);
  at::Tensor logits, loss;
  {
    AutocastScope autocast(device, options.precision);
    logits = network.apply(inputs);
    loss = batch_loss(logits.to(at::kFloat), targets, options.loss);
  }
  loss.backward();
  torch::NoGradGuard no_grad;
  // One copy to the host a step: on a GPU the host then waits for the device once.
  const at::Tensor correct = is_classification(options.loss) ? logits.argmax(1).eq(targets).sum().to(at::kDouble)
                                                              : at::zeros({}, loss.options().dtype(at::kDouble));
  const at::Tensor both = at::stack({correct, loss.detach().to(at::kDouble)}).cpu();
  const auto count = static_cast<double>(targets.size(0));
  StepTotals totals;
  totals.correct = both[0].item<double>();
  totals.loss_sum = both[1].item<double>() * count;
  totals.samples = count;
  return totals;
}

}  // namespace

EpochStats train_epoch(Network& network, torch::optim::Optimizer& optimizer, BatchLoader& loader,
                       c10::Device device, EpochProgress progress, GradientExchange& exchange,
                       const StepCallback& on_step, const StepOptions& options) {
  network.train();
  const auto start = Clock::now();
  const double seconds_before = progress.seconds;
  const std::vector<at::Tensor> parameters = network.parameters();
  while (options.steps < 0 || progress.batches < options.steps) {
    const std::vector<Batch> batches = next_batches(loader, exchange.batches_per_step());
    if (batches.empty() && options.steps < 0) break;
    exchange.begin_step(optimizer, parameters);
    StepTotals local;
    for (const Batch& batch : batches) {
      if (batch.targets.size(0) == 0) continue;
      exchange.begin_minibatch(optimizer);
      const StepTotals one = forward_backward(network, batch, device, options);
      // Alone, a loss is judged at once (before a codec sees its gradient); across ranks, once
      // all ranks have the step's total (below), so that they stop together.
      if (!exchange.collective()) check_finite(one.loss_sum / one.samples, progress.batches + 1);
      local.loss_sum += one.loss_sum;
      local.correct += one.correct;
      local.samples += one.samples;
      exchange.end_minibatch(parameters);
    }
    local.stop = options.stop_requested && options.stop_requested();
    const StepTotals step = exchange.finish_step(parameters, local, device);
    if (exchange.collective()) check_finite(step.loss_sum, progress.batches + 1);  // before the step
    optimizer.step();
    progress.batches += std::max<std::int64_t>(1, static_cast<std::int64_t>(batches.size()));
    progress.loss_sum += step.loss_sum;
    progress.correct += static_cast<std::int64_t>(std::llround(step.correct));
    progress.samples += static_cast<std::int64_t>(std::llround(step.samples));
    progress.stop = step.stop;
    progress.seconds = seconds_before + std::chrono::duration<double>(Clock::now() - start).count();
    if (on_step) on_step(progress, step.loss_sum / step.samples);
    if (progress.stop) break;
  }
  progress.seconds = seconds_before + std::chrono::duration<double>(Clock::now() - start).count();
  return progress;
}

Evaluation evaluate(Network& network, BatchLoader& loader, c10::Device device, bool top5, LossKind kind,
                    Precision precision, Predictions* predictions) {
  const bool was_training = network.is_training();
  network.eval();
  torch::NoGradGuard no_grad;
  Evaluation result;
  // Totals stay on the device until the end: no wait for the device between batches.
  const auto on_device = at::TensorOptions().device(device);
  at::Tensor loss_sum = at::zeros({}, on_device.dtype(at::kDouble));
  at::Tensor correct1 = at::zeros({}, on_device.dtype(at::kLong));
  at::Tensor correct5 = at::zeros({}, on_device.dtype(at::kLong));
  std::vector<at::Tensor> labels, top_classes, top_scores;  // per batch, on the device until the end
  while (auto batch = loader.next()) {
    const at::Tensor inputs = batch->inputs.to(device, /*non_blocking=*/true);
    const at::Tensor targets = batch->targets.to(device, /*non_blocking=*/true);
    at::Tensor logits;
    {
      AutocastScope autocast(device, precision);
      logits = network.apply(inputs).to(at::kFloat);
    }
    loss_sum += batch_loss(logits, targets, kind, /*sum=*/true).to(at::kDouble);
    result.samples += targets.size(0);
    if (!is_classification(kind)) continue;
    correct1 += logits.argmax(1).eq(targets).sum();
    if (top5) {
      const auto k = std::min<std::int64_t>(5, logits.size(1));
      const at::Tensor best = std::get<1>(logits.topk(k, 1));
      correct5 += best.eq(targets.unsqueeze(1)).any(1).sum();
    }
    if (predictions != nullptr) {
      auto [scores, classes] = logits.topk(std::min<std::int64_t>(5, logits.size(1)), 1);
      labels.push_back(targets);
      top_classes.push_back(classes);
      top_scores.push_back(scores);
    }
  }
  network.train(was_training);
  if (predictions != nullptr && !labels.empty()) {
    predictions->labels = at::cat(labels).to(at::kCPU, at::kLong);
    predictions->top_classes = at::cat(top_classes).to(at::kCPU, at::kLong);
    predictions->top_scores = at::cat(top_scores).to(at::kCPU, at::kFloat);
  }
  if (result.samples > 0) {
    const auto n = static_cast<double>(result.samples);
    result.loss = loss_sum.item<double>() / n;
    result.top1 = is_classification(kind) ? static_cast<double>(correct1.item<std::int64_t>()) / n : -1.0;
    result.top5 = top5 && is_classification(kind) ? static_cast<double>(correct5.item<std::int64_t>()) / n : -1.0;
  }
  return result;
}

AutocastScope::AutocastScope(c10::Device device, Precision precision) : type_(device.type()) {
  if (precision == Precision::fp32) return;
  active_ = true;
  was_enabled_ = at::autocast::is_autocast_enabled(type_);
  was_dtype_ = at::autocast::get_autocast_dtype(type_);
  at::autocast::set_autocast_enabled(type_, true);
  at::autocast::set_autocast_dtype(type_, at::kBFloat16);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  // The casts of weights are cached within the outermost scope only.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(type_, was_enabled_);
  at::autocast::set_autocast_dtype(type_, was_dtype_);
}

}  // namespace ql::core
