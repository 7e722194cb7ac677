// Algorithms are quantisation methods. Every hook is optional: a training-time method fills
// quantiser slots in attach() and anneals in the epoch/step hooks; a gradient quantiser gives
// a codec; a post-training method quantises in post_training(); variants() lists the settings
// the host evaluates side by side (a bit-depth sweep, a bits x radius grid).
//
//   class Uniform : public ql::Algorithm {
//     void post_training(ql::Network& net, ql::Calibration& data, ql::Context& ctx) override;
//   };
#pragma once

#include "quantlab/sdk/context.hpp"
#include "quantlab/sdk/plugin.hpp"
#include "quantlab/sdk/problem.hpp"
#include "quantlab/sdk/topology.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace torch::serialize {
class InputArchive;
class OutputArchive;
}  // namespace torch::serialize

namespace ql {

/// Training samples for data-driven post-training methods, drawn with a fixed seed.
class Calibration {
 public:
  virtual ~Calibration();
  /// Number of training samples available.
  virtual std::int64_t size() const = 0;
  /// Calls `visit` on the batches of the first `max_samples` samples of a fixed, seeded
  /// order: the same batches every call, without augmentation.
  virtual void for_each_batch(std::int64_t max_samples,
                              const std::function<void(const Batch&)>& visit) = 0;
};

/// Encodes gradient buckets for the data-parallel exchange (NUQSGD, QSGD, ALQ, AMQ).
class GradientCodec {
 public:
  virtual ~GradientCodec();
  /// A packed bit stream for one flat fp32 bucket, on the device the network trains on (a
  /// codec without device code copies it to the CPU first).
  virtual std::vector<std::uint8_t> encode(const at::Tensor& bucket) = 0;
  /// The bucket of `numel` values an encoding stands for, on the CPU.
  virtual at::Tensor decode(const std::vector<std::uint8_t>& encoded, std::int64_t numel) = 0;
  /// sum += weight x decode(encoded): how the host averages the workers' gradients (`sum` is a
  /// contiguous fp32 tensor on the training device). Override to decode without a temporary
  /// or on the device.
  virtual void decode_add(const std::vector<std::uint8_t>& encoded, double weight, at::Tensor& sum);
  /// (optional) Adaptive codecs: true when the coming step's gradients should be shown to
  /// observe() before they are encoded. The host then passes every worker's exact gradient of
  /// that step (every simulated worker's, or in data-parallel training every rank's, gathered),
  /// so that all ranks adapt their levels alike and can decode each other.
  virtual bool wants_gradients() const { return false; }
  virtual void observe(const at::Tensor& /*gradient*/) {}
  /// (optional) In data-parallel training, this process encodes as worker `worker` of
  /// `workers`. Random rounding must then differ between workers while the codec's state
  /// (levels, generator) stays the same on every rank.
  virtual void set_worker(int /*worker*/, int /*workers*/) {}
};

/// One setting of an algorithm to evaluate and report (a row of the sweep table).
struct Variant {
  std::string label;                                  ///< e.g. "4 bits"
  std::vector<std::pair<std::string, double>> values; ///< the table's columns, e.g. {"bits", 4}
  std::string series = {};  ///< the method a variant belongs to ("gpfq", "msq"): one line per series in plots

  /// The value of column `name`; throws ql::Error naming the columns there are.
  double value(std::string_view name) const;
};

class Algorithm {
 public:
  using Interface = Algorithm;
  static constexpr PluginKind kKind = PluginKind::algorithm;
  virtual ~Algorithm();

  /// (optional) Before training: fill quantiser slots, re-initialise weights.
  virtual void attach(Network& /*network*/, Context& /*ctx*/) {}
  /// (optional) Before each training epoch (0-based).
  virtual void on_epoch_begin(std::int64_t /*epoch*/, Context& /*ctx*/) {}
  /// (optional) After each optimiser step (global step count, 1-based).
  virtual void on_step_end(std::int64_t /*step*/, Context& /*ctx*/) {}
  /// (optional) A codec replacing the plain gradient all-reduce; nullptr for none.
  virtual std::shared_ptr<GradientCodec> gradient_codec() { return nullptr; }
  /// (optional) After training: quantise `network` in place; the result is what the
  /// experiment keeps.
  virtual void post_training(Network& /*network*/, Calibration& /*calibration*/,
                             Context& /*ctx*/) {}
  /// (optional) Settings to evaluate side by side after training.
  virtual std::vector<Variant> variants() const { return {}; }
  /// (optional) Quantise `network` (a copy of the trained one) as `variant` says; the host
  /// then evaluates it and restores the trained weights.
  virtual void apply_variant(const Variant& /*variant*/, Network& /*network*/,
                             Calibration& /*calibration*/, Context& /*ctx*/) {}
  /// (optional) State that a resumed run needs (schedules, statistics).
  virtual void save_state(torch::serialize::OutputArchive& /*archive*/) const {}
  virtual void load_state(torch::serialize::InputArchive& /*archive*/) {}
};

}  // namespace ql
