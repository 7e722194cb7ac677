// Training and evaluation: the optimiser and learning-rate schedule of [training], one
// epoch of minibatch training, and evaluation (loss, top-1, top-5) on a split. Classification
// problems are scored by a loss on logits and accuracy; regression problems by the mean squared
// error alone (their top-1 is "not measured", -1).
//
//   TrainingSettings settings = TrainingSettings::from(config.section("training"));
//   auto optimizer = make_optimizer(settings, network.parameters());
//   EpochStats stats = train_epoch(network, *optimizer, loader, device, {}, *exchange, on_step);
#pragma once

#include "quantlab/core/batch_loader.hpp"
#include "quantlab/core/predictions.hpp"
#include "quantlab/sdk/config.hpp"
#include "quantlab/sdk/context.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/topology.hpp"

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace torch::optim {
class Optimizer;
}

namespace ql::core {

class GradientExchange;

/// The training loss became NaN or infinite at `batch` (1-based, in its epoch).
class NonFiniteLoss : public Error {
 public:
  NonFiniteLoss(const std::string& message, std::int64_t batch) : Error(message), batch(batch) {}
  std::int64_t batch;
};

/// The training loss: cross-entropy, or the (squared) multi-class hinge of the ANA reference:
/// targets +1 for the class and -1 elsewhere, mean over classes of max(0, 1 - t·y) (squared);
/// for regression, the squared error averaged over the target's components.
enum class LossKind { cross_entropy, hinge, squared_hinge, mean_squared_error };

/// True for the losses of class targets (scored by accuracy too), false for regression's.
bool is_classification(LossKind kind);

/// The mean (or, with `sum`, the summed over samples) loss of a batch of network outputs:
/// logits against class indices, or values against target vectors.
at::Tensor batch_loss(const at::Tensor& outputs, const at::Tensor& targets, LossKind kind, bool sum = false);

enum class OptimizerKind { sgd, adam, adamw };
enum class ScheduleKind { constant, step, multistep, cosine };
/// What checkpoints/best.pt keeps: the highest validation top-1 or the lowest validation loss.
enum class BestMetric { valid_top1, valid_loss };

/// [training] with every value range-checked and every choice parsed into its enum.
struct TrainingSettings {
  std::int64_t epochs;
  std::int64_t batch_size;
  std::int64_t eval_batch_size;
  std::int64_t valid_every;
  std::int64_t checkpoint_every;
  std::int64_t checkpoint_every_steps;
  BestMetric best_metric;
  std::int64_t folds;
  double valid_fraction;        ///< held out of the training split when the problem has no validation split
  std::uint64_t hold_out_seed;
  bool drop_last;
  LossKind loss;
  std::int64_t simulated_workers;  ///< minibatch gradients averaged per step (each through the codec)
  OptimizerKind optimizer;
  double lr;
  double momentum;
  bool nesterov;
  double weight_decay;
  std::vector<double> betas;
  double eps;
  ScheduleKind schedule;
  std::int64_t step_size;
  double gamma;
  std::vector<std::int64_t> milestones;
  double min_lr;

  /// Throws ql::ConfigError naming the offending key. `loss = "auto"` and
  /// `best_metric = "auto"` become what `task` is scored by (cross-entropy and valid/top1, or
  /// the mean squared error and valid/loss); a classification loss or valid/top1 for a
  /// regression problem, or the squared error for a classification one, is refused.
  static TrainingSettings from(const Config& training, Task task = Task::classification);
};

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const TrainingSettings& settings,
                                                        const std::vector<at::Tensor>& parameters);

/// The learning rate of `epoch` (0-based) under the configured schedule.
double scheduled_lr(const TrainingSettings& settings, std::int64_t epoch);
void set_lr(torch::optim::Optimizer& optimizer, double lr);

/// Where an epoch stands: what a mid-epoch checkpoint saves and a resumed epoch starts from.
struct EpochProgress {
  std::int64_t batches = 0;  ///< batches done (data-parallel: steps, one shard each)
  std::int64_t samples = 0;
  double loss_sum = 0.0;     ///< sum over samples of the loss
  std::int64_t correct = 0;
  double seconds = 0.0;

  /// Set after a step when a stop was requested (in data-parallel training: on any rank, so
  /// that all ranks stop after the same step). Not part of a checkpoint.
  bool stop = false;

  double loss() const { return samples > 0 ? loss_sum / static_cast<double>(samples) : 0.0; }
  double top1() const { return samples > 0 ? static_cast<double>(correct) / static_cast<double>(samples) : 0.0; }
  double images_per_second() const { return seconds > 0 ? samples / seconds : 0.0; }
};
using EpochStats = EpochProgress;

/// Called after each optimiser step with the progress so far (progress.batches is the 1-based
/// number of the batch just done) and the step's mean loss.
using StepCallback = std::function<void(const EpochProgress& progress, double loss)>;

/// The arithmetic of forward passes ([run] precision): fp32, or bf16 autocast (matrix products
/// and convolutions in bfloat16, reductions, losses and the weights' updates in fp32).
enum class Precision { fp32, bf16 };

/// bf16 autocast for the forward passes in its scope on the device's kind (CUDA, or the CPU's
/// autocast for a run on the CPU); restores what was set before. fp32: does nothing.
class AutocastScope {
 public:
  AutocastScope(c10::Device device, Precision precision);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  c10::DeviceType type_;
  bool active_ = false;
  bool was_enabled_ = false;
  c10::ScalarType was_dtype_ = c10::ScalarType::Float;
};

/// How a step is made besides its gradient exchange.
struct StepOptions {
  LossKind loss = LossKind::cross_entropy;
  Precision precision = Precision::fp32;
  /// Optimiser steps in the epoch, when the loader may run dry before (data-parallel: a rank
  /// whose shard of the last batch is empty still takes part in that step); -1: until the
  /// loader has no batch left.
  std::int64_t steps = -1;
  /// Polled after every step; a collective exchange makes all ranks agree on it.
  std::function<bool()> stop_requested = {};
};

/// One pass of minibatch SGD over `loader` (forward, loss, backward, exchange, step),
/// continuing `progress` (the loader starts at batch progress.batches). Returns the epoch's
/// totals; the exchange keeps the statistics of its traffic.
EpochStats train_epoch(Network& network, torch::optim::Optimizer& optimizer, BatchLoader& loader,
                       c10::Device device, EpochProgress progress, GradientExchange& exchange,
                       const StepCallback& on_step, const StepOptions& options = {});

/// Mean loss and accuracy of `network` on all of `loader`, in inference mode; with
/// `predictions`, also each sample's (on the CPU).
Evaluation evaluate(Network& network, BatchLoader& loader, c10::Device device, bool top5,
                    LossKind loss = LossKind::cross_entropy, Precision precision = Precision::fp32,
                    Predictions* predictions = nullptr);

}  // namespace ql::core
