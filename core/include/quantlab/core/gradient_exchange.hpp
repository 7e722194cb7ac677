// How the gradients of one optimiser step are put together: by this process alone, averaged
// over simulated workers (each through the algorithm's codec, as if sent), or exchanged with
// the other ranks of a data-parallel job. The training step is one loop; what differs between
// the three lives behind this interface, and each keeps the statistics of its own traffic.
//
//   auto exchange = make_gradient_exchange(settings.simulated_workers, codec, world);
//   EpochStats stats = train_epoch(network, *optimizer, loader, device, {}, *exchange, on_step);
//   for (const auto& [name, value] : exchange->epoch_metrics()) metrics.scalar(name, value, step);
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace ql {
class GradientCodec;
}

namespace torch::optim {
class Optimizer;
}

namespace ql::core {

class DataParallel;

/// What the minibatches of one step add up to: loss summed over samples, correct answers,
/// samples, and whether a stop was asked for (on any rank, once exchanged).
struct StepTotals {
  double loss_sum = 0.0;
  double correct = 0.0;
  double samples = 0.0;
  bool stop = false;
};

/// The traffic of the steps since the last reset_epoch(): bytes that would travel or did,
/// coordinates encoded, and the quantisation error against the exact gradients.
struct ExchangeStats {
  std::int64_t steps = 0;
  double wire_bytes = 0.0;           ///< encoded (or fp32) gradient bytes per worker, summed
  double coordinates = 0.0;          ///< gradient coordinates those bytes carried
  double quantization_error2 = 0.0;  ///< Σ ||Q(g_w) - g_w||²
  double gradient_norm2 = 0.0;       ///< Σ ||g_w||²
  double worker_spread2 = 0.0;       ///< Σ ||g_w - mean g||²: plain SGD's own sampling variance
  double sent_bytes = 0.0;           ///< data-parallel: bytes this rank sent (ring collectives)
};

class GradientExchange {
 public:
  virtual ~GradientExchange();

  /// Minibatches the loader hands to one optimiser step (simulated workers: one each).
  virtual std::int64_t batches_per_step() const { return 1; }
  /// True when the step's totals are only known once exchanged (a non-finite loss is then
  /// judged on every rank alike, after the exchange).
  virtual bool collective() const { return false; }
  /// Before the step's first forward pass.
  virtual void begin_step(torch::optim::Optimizer& optimizer, const std::vector<at::Tensor>& parameters);
  /// Before the forward pass of each minibatch of the step.
  virtual void begin_minibatch(torch::optim::Optimizer& optimizer);
  /// After the backward pass of each minibatch: its gradient is in the parameters' grad.
  virtual void end_minibatch(const std::vector<at::Tensor>& /*parameters*/) {}
  /// Leaves the step's gradient in the parameters' grad and returns the step's totals (this
  /// process's `local` ones, or summed over the ranks).
  virtual StepTotals finish_step(const std::vector<at::Tensor>& parameters, const StepTotals& local,
                                 c10::Device device) = 0;

  const ExchangeStats& stats() const { return stats_; }
  void reset_epoch() { stats_ = {}; }
  /// The epoch's figures as metric series ("train/bits_per_coordinate", ...).
  std::vector<std::pair<std::string, double>> epoch_metrics() const;
  /// A few words for the epoch's console line ("3.08 bits/coord, quantisation nvar 0.43"), or "".
  std::string epoch_summary() const;

 protected:
  /// True when a codec encodes the gradients (its bits per coordinate are then reported).
  virtual bool encodes() const { return false; }
  ExchangeStats stats_;
};

/// The exchange for these settings. This is the one place that says what mixes: simulated
/// workers and data-parallel ranks do not (ql::ConfigError); a codec works with either.
std::unique_ptr<GradientExchange> make_gradient_exchange(std::int64_t simulated_workers,
                                                         std::shared_ptr<GradientCodec> codec,
                                                         DataParallel* world);
/// The same rule, checked before any work starts.
void check_exchange_settings(std::int64_t simulated_workers, bool data_parallel);

}  // namespace ql::core
