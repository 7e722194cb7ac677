// The variants sweep: each setting an algorithm lists is applied to a copy of the trained
// network's state, evaluated on the test split, and undone; the host writes the accuracy table
// and how far each variant moved each layer.
#pragma once

#include "quantlab/sdk/algorithm.hpp"

#include <string>
#include <utility>
#include <vector>

namespace ql::core::run {

struct FoldEnvironment;

/// Everything an algorithm's variant may change: parameters, buffers and quantiser slots.
struct NetworkState {
  std::vector<at::Tensor> tensors;
  std::vector<std::pair<std::shared_ptr<Quantizer>, std::shared_ptr<Quantizer>>> slots;
  std::shared_ptr<Quantizer> input;
};
NetworkState snapshot(Network& network);
void restore(Network& network, const NetworkState& state);

struct VariantTables {
  Table accuracy;     ///< a row per variant, the float network first
  Table layer_error;  ///< ||W_variant - W_trained|| / ||W_trained|| per variant and layer
};

/// Applies, evaluates and undoes each of `variants` of algorithm `name`; `trained` is the
/// float network's evaluation on the test split. The network is left as trained.
VariantTables sweep_variants(const std::string& name, Algorithm& algorithm, const std::vector<Variant>& variants,
                             Network& network, Calibration& calibration, Context& ctx, const FoldEnvironment& env,
                             const Evaluation& trained);

}  // namespace ql::core::run
