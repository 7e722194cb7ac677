#include "run/algorithm_set.hpp"

#include "quantlab/core/batch_loader.hpp"
#include "quantlab/core/experiment_store.hpp"
#include "run/hooks.hpp"

#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <fmt/format.h>

#include <sstream>

namespace ql::core::run {

AlgorithmSet::AlgorithmSet(PluginRegistry& registry, const std::vector<PluginChoice>& choices,
                           const FoldEnvironment& env, std::uint64_t seed, std::uint64_t first_seed_stream,
                           const std::filesystem::path& artifacts_root) {
  for (std::size_t i = 0; i < choices.size(); ++i) {
    const PluginChoice& choice = choices[i];
    slots_.push_back({choice.name, registry.create<Algorithm>(choice.name, choice.options),
                      std::make_unique<HostContext>(choice.options, choice.name, env,
                                                    derive_seed(seed, first_seed_stream + i),
                                                    artifacts_root / choice.name)});
  }
}

void AlgorithmSet::attach(Network& network) {
  for (AlgorithmSlot& a : slots_) in_hook(a.name, "attach", [&] { a.plugin->attach(network, *a.context); });
}

void AlgorithmSet::on_epoch_begin(std::int64_t epoch) {
  for (AlgorithmSlot& a : slots_) {
    in_hook(a.name, "on_epoch_begin", [&] { a.plugin->on_epoch_begin(epoch, *a.context); });
  }
}

void AlgorithmSet::on_step_end(std::int64_t step) {
  for (AlgorithmSlot& a : slots_) in_hook(a.name, "on_step_end", [&] { a.plugin->on_step_end(step, *a.context); });
}

std::shared_ptr<GradientCodec> AlgorithmSet::gradient_codec() {
  std::shared_ptr<GradientCodec> chosen;
  for (AlgorithmSlot& a : slots_) {
    auto codec = in_hook(a.name, "gradient_codec", [&] { return a.plugin->gradient_codec(); });
    if (!codec) continue;
    QL_CHECK(chosen == nullptr, "two algorithms offer a gradient codec; use one");
    chosen = std::move(codec);
  }
  return chosen;
}

void AlgorithmSet::post_training(Network& network, Calibration& calibration) {
  for (AlgorithmSlot& a : slots_) {
    in_hook(a.name, "post_training", [&] { a.plugin->post_training(network, calibration, *a.context); });
  }
}

void AlgorithmSet::save_states(torch::serialize::OutputArchive& archive) const {
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    torch::serialize::OutputArchive state;
    in_hook(slots_[i].name, "save_state", [&] { slots_[i].plugin->save_state(state); });
    archive.write(fmt::format("algorithm/{}", i), state);
  }
}

void AlgorithmSet::load_states(torch::serialize::InputArchive& archive) {
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    torch::serialize::InputArchive state;
    archive.read(fmt::format("algorithm/{}", i), state);
    in_hook(slots_[i].name, "load_state", [&] { slots_[i].plugin->load_state(state); });
  }
}

std::string AlgorithmSet::state_bytes(std::size_t i) const {
  torch::serialize::OutputArchive archive;
  in_hook(slots_[i].name, "save_state", [&] { slots_[i].plugin->save_state(archive); });
  std::ostringstream out;
  archive.save_to(out);
  return std::move(out).str();
}

void AlgorithmSet::load_state_bytes(std::size_t i, const std::string& bytes) {
  torch::serialize::InputArchive archive;
  load_archive(archive, bytes);
  in_hook(slots_[i].name, "load_state", [&] { slots_[i].plugin->load_state(archive); });
}

}  // namespace ql::core::run
