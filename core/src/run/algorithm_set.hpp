// The algorithms of one fold, each held with its name and its Context, and the hooks the run
// calls on all of them in order.
#pragma once

#include "quantlab/core/experiment_config.hpp"
#include "quantlab/core/plugin_registry.hpp"
#include "run/host_context.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace torch::serialize {
class InputArchive;
class OutputArchive;
}  // namespace torch::serialize

namespace ql::core::run {

struct AlgorithmSlot {
  std::string name;
  PluginPtr<Algorithm> plugin;
  std::unique_ptr<HostContext> context;
};

class AlgorithmSet {
 public:
  /// Creates each chosen algorithm with its context; plugin i's seed stream is
  /// derive_seed(seed, first_seed_stream + i), its artefacts go to artifacts_root/NAME.
  AlgorithmSet(PluginRegistry& registry, const std::vector<PluginChoice>& choices, const FoldEnvironment& env,
               std::uint64_t seed, std::uint64_t first_seed_stream, const std::filesystem::path& artifacts_root);

  std::vector<AlgorithmSlot>& slots() { return slots_; }
  bool empty() const { return slots_.empty(); }

  void attach(Network& network);
  void on_epoch_begin(std::int64_t epoch);
  void on_step_end(std::int64_t step);
  /// The one codec the algorithms offer, or nullptr; two are a ql::Error.
  std::shared_ptr<GradientCodec> gradient_codec();
  void post_training(Network& network, Calibration& calibration);

  /// Every algorithm's state under "algorithm/i" of `archive`.
  void save_states(torch::serialize::OutputArchive& archive) const;
  void load_states(torch::serialize::InputArchive& archive);
  /// Algorithm i's state alone, as bytes (to broadcast from rank 0).
  std::string state_bytes(std::size_t i) const;
  void load_state_bytes(std::size_t i, const std::string& bytes);

 private:
  std::vector<AlgorithmSlot> slots_;
};

}  // namespace ql::core::run
