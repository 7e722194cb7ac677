#include "run/fit_loop.hpp"

#include "quantlab/core/batch_loader.hpp"
#include "quantlab/core/data_parallel.hpp"
#include "quantlab/core/experiment_runner.hpp"
#include "quantlab/core/report.hpp"
#include "run/signals.hpp"

#include <fmt/format.h>

#include <cmath>

namespace ql::core::run {

// This epoch's batches: a seeded order (in data-parallel training this rank's shard of each
// global batch), with the number of optimiser steps the epoch has.
struct FitLoop::EpochData {
  std::unique_ptr<BatchLoader> loader;
  std::int64_t steps = -1;  ///< data-parallel: global batches; -1: as many as the loader gives
  std::int64_t progress_total = 0;  ///< what the progress line counts to
};

FitLoop::FitLoop(Experiment& x, const FoldEnvironment& env, FoldRecord& record, Network& network,
                 torch::optim::Optimizer& optimizer, AlgorithmSet& algorithms, GradientExchange& exchange,
                 FoldCheckpoints& checkpoints, MetricsLog& metrics)
    : x_(x), env_(env), record_(record), network_(network), optimizer_(optimizer), algorithms_(algorithms),
      exchange_(exchange), checkpoints_(checkpoints), metrics_(metrics),
      scored_by_top1_(env.data->valid != nullptr && x.settings.best_metric == BestMetric::valid_top1),
      best_metric_(env.data->valid == nullptr ? "train/loss" : scored_by_top1_ ? "valid/top1" : "valid/loss") {}

void FitLoop::run(TrainingPosition& at) {
  const TrainingSettings& settings = x_.settings;
  if (x_.histogram_every > 0 && at.step == 0) log_histograms(0);
  for (std::int64_t epoch = at.epoch; epoch < settings.epochs; ++epoch) {
    const double lr = scheduled_lr(settings, epoch);
    set_lr(optimizer_, lr);
    algorithms_.on_epoch_begin(epoch);
    EpochData data = epoch_data(epoch);
    const EpochProgress start = epoch == at.epoch ? at.progress : EpochProgress{};
    data.loader->start_at(start.batches);
    exchange_.reset_epoch();
    const EpochStats stats = train(epoch, data, start, at);
    std::string line = log_training(epoch, lr, stats, at.step);
    const double score = validate(epoch, stats, at.step, line);
    if (x_.histogram_every > 0 && (epoch + 1) % x_.histogram_every == 0) log_histograms(at.step);
    x_.console.info(fmt::format("{}  lr {:.3g}  {:.0f} img/s  {:.1f} s", line, lr, stats.images_per_second(),
                                stats.seconds));
    end_epoch(epoch, score, at);
  }
}

FitLoop::EpochData FitLoop::epoch_data(std::int64_t epoch) const {
  const TrainingSettings& settings = x_.settings;
  std::vector<std::int64_t> order = epoch_order(env_.data->train->size(), derive_seed(x_.seed, kShuffleStream), epoch);
  std::int64_t batch_size = settings.batch_size;
  std::uint64_t augment_seed = derive_seed(derive_seed(x_.seed, kAugmentStream), epoch);
  EpochData data;
  if (x_.world != nullptr) {
    const auto total = static_cast<std::int64_t>(order.size());
    data.steps = settings.drop_last ? total / batch_size : (total + batch_size - 1) / batch_size;
    order = shard_order(order, batch_size, x_.world->rank(), x_.world->size(), settings.drop_last);
    batch_size /= x_.world->size();
    if (!x_.root) augment_seed = derive_seed(augment_seed, kRankStream + static_cast<std::uint64_t>(x_.world->rank()));
  }
  data.loader = std::make_unique<BatchLoader>(env_.data->train, std::move(order), batch_size, augment_seed,
                                              /*augment=*/true, x_.prefetch, settings.drop_last && x_.world == nullptr);
  data.loader->pin_memory(env_.device.is_cuda());
  data.progress_total = data.steps >= 0 ? data.steps : data.loader->batches();
  return data;
}

// One epoch of steps. A loss that is no longer finite ends the run naming the step and the
// checkpoint to resume from.
EpochStats FitLoop::train(std::int64_t epoch, EpochData& data, const EpochProgress& start, TrainingPosition& at) {
  StepOptions options;
  options.loss = x_.settings.loss;
  options.precision = env_.precision;
  options.steps = data.steps;
  options.stop_requested = [] { return StopOnSignals::requested() != 0; };
  auto on_step = [&](const EpochProgress& progress, double loss) {
    after_step(epoch, data.progress_total, progress, loss, at);
  };
  try {
    return train_epoch(network_, optimizer_, *data.loader, env_.device, start, exchange_, on_step, options);
  } catch (const NonFiniteLoss& e) {
    const std::string& checkpoint = checkpoints_.last_written();
    throw Error(fmt::format("{}{} at step {} (epoch {}, batch {}); the last good checkpoint is {}", env_.fold_label,
                            e.what(), at.step + 1, epoch + 1, e.batch,
                            checkpoint.empty() ? std::string("none (no checkpoint was written before)") : checkpoint));
  }
}

// Per step: the step's loss, the algorithms' hook, progress, and a mid-epoch checkpoint when
// one is due or a stop was asked for.
void FitLoop::after_step(std::int64_t epoch, std::int64_t epoch_steps, const EpochProgress& progress, double loss,
                         TrainingPosition& at) {
  ++at.step;
  if (x_.step_scalars) metrics_.scalar("train/loss_step", loss, at.step);
  algorithms_.on_step_end(at.step);
  x_.console.progress(label(epoch), progress.batches, epoch_steps, fmt::format("loss {:.4f}", loss));
  const bool periodic = x_.settings.checkpoint_every_steps > 0 && at.step % x_.settings.checkpoint_every_steps == 0;
  if ((progress.stop || periodic) && progress.batches < epoch_steps) {
    TrainingPosition mid_epoch = at;
    mid_epoch.epoch = epoch;
    mid_epoch.progress = progress;
    save("last", mid_epoch);
    metrics_.flush();
    record_.steps = at.step;
    update_record(x_);
  }
  if (progress.stop) {
    throw Interrupted(fmt::format("{} at epoch {} batch {}; checkpoint {}", stopped_by(), epoch + 1, progress.batches,
                                  checkpoints_.path("last").string()));
  }
}

std::string FitLoop::log_training(std::int64_t epoch, double lr, const EpochStats& stats, std::int64_t step) {
  metrics_.scalar("train/loss", stats.loss(), step);
  const bool classification = is_classification(x_.settings.loss);
  if (classification) metrics_.scalar("train/top1", stats.top1(), step);
  metrics_.scalar("train/lr", lr, step);
  metrics_.scalar("train/images_per_second", stats.images_per_second(), step);
  metrics_.scalar("epoch", static_cast<double>(epoch + 1), step);
  for (const auto& [name, value] : exchange_.epoch_metrics()) metrics_.scalar(name, value, step);
  std::string line = fmt::format("{}  train loss {:.4f}", label(epoch), stats.loss());
  if (classification) line += fmt::format(" top1 {}", percent(stats.top1()));
  if (const std::string traffic = exchange_.epoch_summary(); !traffic.empty()) line += "  " + traffic;
  return line;
}

// The epoch's score for the best checkpoint: validation when it ran this epoch, -inf when a
// validation split exists but was not evaluated, and the training loss without one.
double FitLoop::validate(std::int64_t epoch, const EpochStats& stats, std::int64_t step, std::string& line) {
  if (env_.data->valid == nullptr) return -stats.loss();
  const bool last = epoch + 1 == x_.settings.epochs;
  if ((epoch + 1) % x_.settings.valid_every != 0 && !last) return -INFINITY;
  const Evaluation valid = evaluate_split(env_, network_, Split::valid);
  line += fmt::format("  valid {}", describe(valid));
  metrics_.scalar("valid/loss", valid.loss, step);
  if (valid.top1 >= 0) metrics_.scalar("valid/top1", valid.top1, step);
  if (valid.top5 >= 0) metrics_.scalar("valid/top5", valid.top5, step);
  return scored_by_top1_ ? valid.top1 : -valid.loss;
}

// The epoch's checkpoints (best, and last when due, at the end or on a stop), metrics and record.
void FitLoop::end_epoch(std::int64_t epoch, double score, TrainingPosition& at) {
  at.epoch = epoch + 1;
  at.progress = {};
  if (score > at.best_score) {
    at.best_score = score;
    at.best_epoch = epoch + 1;
    save("best", at);
  }
  const bool last = epoch + 1 == x_.settings.epochs;
  const bool stop = stop_agreed(x_.world);
  if ((epoch + 1) % x_.settings.checkpoint_every == 0 || last || stop) save("last", at);
  metrics_.flush();
  record_.epochs_done = epoch + 1;
  record_.steps = at.step;
  record_.best_metric = best_metric_;
  record_.best_value = scored_by_top1_ ? at.best_score : -at.best_score;
  record_.best_epoch = at.best_epoch;
  update_record(x_);
  if (stop) {
    throw Interrupted(fmt::format("{} after epoch {}; checkpoint {}", stopped_by(), epoch + 1,
                                  checkpoints_.path("last").string()));
  }
}

void FitLoop::log_histograms(std::int64_t step) {
  for (const auto& [name, layer] : network_.quantizable_layers()) {
    if (layer->has_weight()) metrics_.histogram("weights/" + name, layer->weight, step);
  }
}

void FitLoop::save(const std::string& name, const TrainingPosition& at) {
  if (x_.root) checkpoints_.save(name, at);
}

std::string FitLoop::label(std::int64_t epoch) const {
  return fmt::format("{}epoch {}/{}", env_.fold_label, epoch + 1, x_.settings.epochs);
}

}  // namespace ql::core::run
