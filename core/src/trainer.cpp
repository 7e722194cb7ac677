#include "quantlab/core/trainer.hpp"

#include "quantlab/core/data_parallel.hpp"

#include "quantlab/sdk/algorithm.hpp"
#include "quantlab/sdk/error.hpp"

#include <torch/nn/functional/loss.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <fmt/format.h>

#include <chrono>
#include <cmath>

namespace ql::core {

TrainingSettings TrainingSettings::from(const Config& training) {
  TrainingSettings s;
  s.epochs = training.get_int("epochs", 0, 1'000'000);
  s.batch_size = training.get_int("batch_size", 1, 1 << 24);
  s.eval_batch_size = training.get_int("eval_batch_size", 1, 1 << 24);
  s.valid_every = training.get_int("valid_every", 1, 1'000'000);
  s.checkpoint_every = training.get_int("checkpoint_every", 1, 1'000'000);
  s.checkpoint_every_steps = training.get_int("checkpoint_every_steps", 0, INT64_MAX);
  s.best_metric = training.get_choice("best_metric", {"valid/top1", "valid/loss"});
  s.folds = training.get_int("folds", 1, 1000);
  s.drop_last = training.get_bool("drop_last");
  s.simulated_workers = training.get_int("simulated_workers", 1, 1024);
  const std::string loss = training.get_choice("loss", {"cross_entropy", "hinge", "squared_hinge"});
  s.loss = loss == "hinge" ? LossKind::hinge : loss == "squared_hinge" ? LossKind::squared_hinge : LossKind::cross_entropy;

  const Config optimizer = training.table("optimizer");
  s.optimizer = optimizer.get_choice("name", {"sgd", "adam", "adamw"});
  s.lr = optimizer.get_double("lr", 0.0, 1e6);
  s.momentum = optimizer.get_double("momentum", 0.0, 1.0);
  s.nesterov = optimizer.get_bool("nesterov");
  if (s.optimizer == "sgd" && s.nesterov && s.momentum <= 0.0) {
    throw ConfigError(optimizer.error_message("nesterov", "Nesterov momentum needs momentum > 0"));
  }
  s.weight_decay = optimizer.get_double("weight_decay", 0.0, 1e6);
  s.betas = optimizer.get_double_list("betas");
  if (s.betas.size() != 2 || s.betas[0] < 0 || s.betas[0] >= 1 || s.betas[1] < 0 || s.betas[1] >= 1) {
    throw ConfigError(optimizer.error_message("betas", "expected two numbers in [0, 1)"));
  }
  s.eps = optimizer.get_double("eps", 0.0, 1.0);

  const Config schedule = training.table("lr_schedule");
  s.schedule = schedule.get_choice("name", {"constant", "step", "multistep", "cosine"});
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
  if (s.optimizer == "sgd") {
    return std::make_unique<torch::optim::SGD>(
        parameters, torch::optim::SGDOptions(s.lr).momentum(s.momentum).nesterov(s.nesterov)
                        .weight_decay(s.weight_decay));
  }
  if (s.optimizer == "adamw") {
    return std::make_unique<torch::optim::AdamW>(
        parameters, torch::optim::AdamWOptions(s.lr).betas({s.betas[0], s.betas[1]}).eps(s.eps)
                        .weight_decay(s.weight_decay));
  }
  return std::make_unique<torch::optim::Adam>(
      parameters, torch::optim::AdamOptions(s.lr).betas({s.betas[0], s.betas[1]}).eps(s.eps)
                      .weight_decay(s.weight_decay));
}

double scheduled_lr(const TrainingSettings& s, std::int64_t epoch) {
  if (s.schedule == "step") return s.lr * std::pow(s.gamma, static_cast<double>(epoch / s.step_size));
  if (s.schedule == "multistep") {
    double lr = s.lr;
    for (std::int64_t milestone : s.milestones) {
      if (epoch >= milestone) lr *= s.gamma;
    }
    return lr;
  }
  if (s.schedule == "cosine" && s.epochs > 0) {
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

at::Tensor classification_loss(const at::Tensor& logits, const at::Tensor& targets, LossKind kind, bool sum) {
  namespace F = torch::nn::functional;
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

// The gradients of `parameters` as one flat fp32 vector (zeros where a gradient is undefined).
at::Tensor flat_gradient(const std::vector<at::Tensor>& parameters) {
  std::vector<at::Tensor> parts;
  for (const at::Tensor& p : parameters) {
    parts.push_back(p.grad().defined() ? p.grad().detach().flatten().to(torch::kFloat32)
                                       : torch::zeros({p.numel()}, p.options().dtype(torch::kFloat32)));
  }
  return torch::cat(parts);
}

void set_gradient(const std::vector<at::Tensor>& parameters, const at::Tensor& flat) {
  std::int64_t offset = 0;
  for (const at::Tensor& p : parameters) {
    const at::Tensor part = flat.slice(0, offset, offset + p.numel()).view(p.sizes()).to(p.dtype());
    if (p.grad().defined()) p.mutable_grad().detach().copy_(part);
    else p.mutable_grad() = part.clone();
    offset += p.numel();
  }
}

// One rank of data-parallel training: forward and backward on this rank's shard of each
// global batch, then the gradient exchange. Without a codec every rank sums count·ḡ over the
// ranks (bucketed all-reduce) and divides by the global count, which is the gradient of the
// global batch's mean loss; with a codec every rank encodes its own mean gradient, the packed
// streams are all-gathered and each rank decodes and averages them (weighted by count) alike.
EpochStats train_epoch_data_parallel(Network& network, torch::optim::Optimizer& optimizer, BatchLoader& loader,
                                     c10::Device device, EpochProgress progress, const StepCallback& on_step,
                                     const StepOptions& options) {
  DataParallel& world = *options.world;
  const auto start = Clock::now();
  const double seconds_before = progress.seconds;
  const std::vector<at::Tensor> parameters = network.parameters();
  const std::int64_t steps = options.steps >= 0 ? options.steps : loader.batches();
  for (std::int64_t step = progress.batches; step < steps; ++step) {
    std::optional<Batch> batch = loader.next();
    optimizer.zero_grad();
    for (const at::Tensor& p : parameters) {
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    }
    double loss_sum = 0.0, correct = 0.0, count = 0.0;
    if (batch && batch->targets.size(0) > 0) {
      const at::Tensor inputs = batch->inputs.to(device, /*non_blocking=*/true);
      const at::Tensor targets = batch->targets.to(device, /*non_blocking=*/true);
      const at::Tensor logits = network.apply(inputs);
      const at::Tensor loss = classification_loss(logits, targets, options.loss);
      loss.backward();
      count = static_cast<double>(targets.size(0));
      torch::NoGradGuard no_grad;
      correct = static_cast<double>(logits.argmax(1).eq(targets).sum().item<std::int64_t>());
      loss_sum = loss.item<double>() * count;
    }
    const bool stop_here = options.stop_requested && options.stop_requested();
    torch::NoGradGuard no_grad;
    std::vector<at::Tensor> gradients;
    for (const at::Tensor& p : parameters) gradients.push_back(p.mutable_grad());
    std::vector<double> totals{loss_sum, correct, count, stop_here ? 1.0 : 0.0};
    if (options.codec == nullptr) {
      for (at::Tensor& g : gradients) g.mul_(count);
      world.all_reduce_sum(totals);
      world.all_reduce_sum(gradients);
      QL_CHECK(totals[2] > 0, "data-parallel step {} had no samples on any rank", step + 1);
      for (at::Tensor& g : gradients) g.div_(totals[2]);
      std::int64_t numel = 0;
      for (const at::Tensor& g : gradients) numel += g.numel();
      progress.wire_bytes += 4.0 * static_cast<double>(numel);
      progress.coordinates += static_cast<double>(numel);
      progress.sent_bytes += ring_all_reduce_bytes(4.0 * static_cast<double>(numel), world.size());
    } else {
      const at::Tensor gradient = flat_gradient(parameters).cpu();
      const std::vector<at::Tensor> counts = world.all_gather(torch::tensor(totals, torch::kFloat64));
      totals.assign(totals.size(), 0.0);
      for (const at::Tensor& c : counts) {
        for (std::size_t i = 0; i < totals.size(); ++i) totals[i] += c[static_cast<std::int64_t>(i)].item<double>();
      }
      QL_CHECK(totals[2] > 0, "data-parallel step {} had no samples on any rank", step + 1);
      if (options.codec->wants_gradients()) {
        for (const at::Tensor& g : world.all_gather(gradient)) options.codec->observe(g);
        progress.sent_bytes += ring_all_gather_bytes(4.0 * static_cast<double>(gradient.numel()), world.size());
      }
      const std::vector<std::uint8_t> wire = options.codec->encode(gradient);
      const auto streams = world.all_gather(wire);
      at::Tensor average = torch::zeros_like(gradient);
      for (std::size_t r = 0; r < streams.size(); ++r) {
        const double weight = counts[r][2].item<double>() / totals[2];
        if (weight == 0) continue;
        if (static_cast<int>(r) != world.rank()) {
          options.codec->decode_add(streams[r], weight, average);
          continue;
        }
        // This rank's own stream is decoded once, for the sum and for its quantisation error.
        const at::Tensor mine = options.codec->decode(wire, gradient.numel());
        average.add_(mine, weight);
        progress.quantization_error2 += (mine - gradient).square().sum().item<double>();
      }
      progress.wire_bytes += static_cast<double>(wire.size());
      progress.coordinates += static_cast<double>(gradient.numel());
      progress.sent_bytes += ring_all_gather_bytes(static_cast<double>(wire.size()), world.size());
      progress.gradient_norm2 += gradient.square().sum().item<double>();
      set_gradient(parameters, average.to(device));
    }
    check_finite(totals[0], step + 1);  // before the step: the weights stay finite
    optimizer.step();
    progress.batches = step + 1;
    progress.loss_sum += totals[0];
    progress.correct += static_cast<std::int64_t>(std::llround(totals[1]));
    progress.samples += static_cast<std::int64_t>(std::llround(totals[2]));
    progress.stop = totals[3] > 0;
    progress.seconds = seconds_before + std::chrono::duration<double>(Clock::now() - start).count();
    if (on_step) on_step(progress, totals[0] / totals[2]);
    if (progress.stop) break;
  }
  progress.seconds = seconds_before + std::chrono::duration<double>(Clock::now() - start).count();
  return progress;
}

}  // namespace

EpochStats train_epoch(Network& network, torch::optim::Optimizer& optimizer, BatchLoader& loader,
                       c10::Device device, EpochProgress progress, const StepCallback& on_step,
                       const StepOptions& options) {
  network.train();
  if (options.world != nullptr) {
    QL_CHECK(options.workers <= 1, "simulated workers and data-parallel ranks do not mix; use one");
    return train_epoch_data_parallel(network, optimizer, loader, device, progress, on_step, options);
  }
  const auto start = Clock::now();
  const double seconds_before = progress.seconds;
  const bool exchange = options.codec != nullptr || options.workers > 1;
  const std::vector<at::Tensor> parameters = network.parameters();
  while (true) {
    std::vector<Batch> batches;
    while (static_cast<std::int64_t>(batches.size()) < (exchange ? options.workers : 1)) {
      auto batch = loader.next();
      if (!batch) break;
      batches.push_back(std::move(*batch));
    }
    if (batches.empty()) break;
    std::vector<at::Tensor> worker_gradients;
    at::Tensor average;
    double step_loss = 0.0;
    std::int64_t step_samples = 0;
    for (const Batch& batch : batches) {
      const at::Tensor inputs = batch.inputs.to(device, /*non_blocking=*/true);
      const at::Tensor targets = batch.targets.to(device, /*non_blocking=*/true);
      optimizer.zero_grad();
      const at::Tensor logits = network.apply(inputs);
      const at::Tensor loss = classification_loss(logits, targets, options.loss);
      loss.backward();
      const auto count = targets.size(0);
      std::int64_t correct = 0;
      {
        torch::NoGradGuard no_grad;
        correct = logits.argmax(1).eq(targets).sum().item<std::int64_t>();
      }
      const double value = loss.item<double>();
      check_finite(value, progress.batches + 1);
      progress.samples += count;
      progress.loss_sum += value * static_cast<double>(count);
      progress.correct += correct;
      step_loss += value * static_cast<double>(count);
      step_samples += count;
      if (!exchange) continue;
      torch::NoGradGuard no_grad;
      at::Tensor gradient = flat_gradient(parameters).cpu();
      at::Tensor received = gradient;
      if (options.codec && options.codec->wants_gradients()) options.codec->observe(gradient);
      if (options.codec) {
        const std::vector<std::uint8_t> wire = options.codec->encode(gradient);
        received = options.codec->decode(wire, gradient.numel());
        progress.wire_bytes += static_cast<double>(wire.size());
        progress.coordinates += static_cast<double>(gradient.numel());
        progress.quantization_error2 += (received - gradient).square().sum().item<double>();
      }
      progress.gradient_norm2 += gradient.square().sum().item<double>();
      worker_gradients.push_back(gradient);
      average = average.defined() ? average.add_(received) : received.clone();
    }
    if (exchange) {
      torch::NoGradGuard no_grad;
      const auto n = static_cast<double>(worker_gradients.size());
      average.div_(n);
      at::Tensor exact = torch::stack(worker_gradients);
      progress.worker_spread2 += (exact - exact.mean(0)).square().sum().item<double>();
      set_gradient(parameters, average.to(device));
    }
    optimizer.step();
    progress.batches += static_cast<std::int64_t>(batches.size());
    progress.seconds = seconds_before + std::chrono::duration<double>(Clock::now() - start).count();
    progress.stop = options.stop_requested && options.stop_requested();
    if (on_step) on_step(progress, step_loss / static_cast<double>(step_samples));
    if (progress.stop) break;
  }
  progress.seconds = seconds_before + std::chrono::duration<double>(Clock::now() - start).count();
  return progress;
}

Evaluation evaluate(Network& network, BatchLoader& loader, c10::Device device, bool top5, LossKind kind) {
  const bool was_training = network.is_training();
  network.eval();
  torch::NoGradGuard no_grad;
  Evaluation result;
  double loss_sum = 0.0;
  std::int64_t correct1 = 0, correct5 = 0;
  while (auto batch = loader.next()) {
    const at::Tensor inputs = batch->inputs.to(device);
    const at::Tensor targets = batch->targets.to(device);
    const at::Tensor logits = network.apply(inputs);
    loss_sum += classification_loss(logits, targets, kind, /*sum=*/true).item<double>();
    correct1 += logits.argmax(1).eq(targets).sum().item<std::int64_t>();
    if (top5) {
      const auto k = std::min<std::int64_t>(5, logits.size(1));
      const at::Tensor best = std::get<1>(logits.topk(k, 1));
      correct5 += best.eq(targets.unsqueeze(1)).any(1).sum().item<std::int64_t>();
    }
    result.samples += targets.size(0);
  }
  network.train(was_training);
  if (result.samples > 0) {
    const auto n = static_cast<double>(result.samples);
    result.loss = loss_sum / n;
    result.top1 = static_cast<double>(correct1) / n;
    result.top5 = top5 ? static_cast<double>(correct5) / n : -1.0;
  }
  return result;
}

}  // namespace ql::core
