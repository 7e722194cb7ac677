// Training one fold from where it stands to its last epoch. The loop itself is short; the
// work around each step and each epoch is in named parts: algorithm hooks, metrics,
// validation, checkpoints and stop signals.
#pragma once

#include "quantlab/core/gradient_exchange.hpp"
#include "quantlab/core/metrics_log.hpp"
#include "run/algorithm_set.hpp"
#include "run/checkpoints.hpp"
#include "run/experiment.hpp"
#include "run/host_context.hpp"

#include <memory>
#include <string>

namespace ql::core {
class BatchLoader;
}

namespace ql::core::run {

class FitLoop {
 public:
  FitLoop(Experiment& x, const FoldEnvironment& env, FoldRecord& record, Network& network,
          torch::optim::Optimizer& optimizer, AlgorithmSet& algorithms, GradientExchange& exchange,
          FoldCheckpoints& checkpoints, MetricsLog& metrics);

  /// Trains from `at` through the last epoch; `at` follows along. Throws Interrupted after a
  /// checkpoint when a stop was asked for.
  void run(TrainingPosition& at);

 private:
  struct EpochData;
  EpochData epoch_data(std::int64_t epoch) const;
  EpochStats train(std::int64_t epoch, EpochData& data, const EpochProgress& start, TrainingPosition& at);
  void after_step(std::int64_t epoch, std::int64_t epoch_steps, const EpochProgress& progress, double loss,
                  TrainingPosition& at);
  std::string log_training(std::int64_t epoch, double lr, const EpochStats& stats, std::int64_t step);
  double validate(std::int64_t epoch, const EpochStats& stats, std::int64_t step, std::string& line);
  void end_epoch(std::int64_t epoch, double score, TrainingPosition& at);
  void log_histograms(std::int64_t step);
  void save(const std::string& name, const TrainingPosition& at);
  std::string label(std::int64_t epoch) const;

  Experiment& x_;
  const FoldEnvironment& env_;
  FoldRecord& record_;
  Network& network_;
  torch::optim::Optimizer& optimizer_;
  AlgorithmSet& algorithms_;
  GradientExchange& exchange_;
  FoldCheckpoints& checkpoints_;
  MetricsLog& metrics_;
  bool scored_by_top1_;      ///< the best epoch has the highest validation top-1 (else the lowest loss)
  std::string best_metric_;  ///< its name for the record: valid/top1, valid/loss, or train/loss without validation
};

}  // namespace ql::core::run
