#include "run/variant_sweep.hpp"

#include "quantlab/core/report.hpp"
#include "run/hooks.hpp"
#include "run/host_context.hpp"

#include <torch/utils.h>

#include <fmt/format.h>

#include <algorithm>
#include <map>

namespace ql::core::run {

NetworkState snapshot(Network& network) {
  NetworkState state;
  for (const auto& p : network.parameters()) state.tensors.push_back(p.detach().clone());
  for (const auto& b : network.buffers()) state.tensors.push_back(b.detach().clone());
  for (const auto& [name, layer] : network.quantizable_layers()) {
    state.slots.emplace_back(layer->weight_quantizer(), layer->output_quantizer());
  }
  state.input = network.input_quantizer();
  return state;
}

void restore(Network& network, const NetworkState& state) {
  torch::NoGradGuard no_grad;
  std::size_t i = 0;
  for (auto& p : network.parameters()) p.copy_(state.tensors[i++]);
  for (auto& b : network.buffers()) b.copy_(state.tensors[i++]);
  i = 0;
  for (const auto& [name, layer] : network.quantizable_layers()) {
    layer->set_weight_quantizer(state.slots[i].first);
    layer->set_output_quantizer(state.slots[i++].second);
  }
  network.set_input_quantizer(state.input);
}

namespace {

std::map<std::string, at::Tensor> effective_weights(Network& network) {
  std::map<std::string, at::Tensor> weights;
  for (const auto& [name, layer] : network.quantizable_layers()) {
    if (layer->has_weight()) weights[name] = layer->effective_weight().detach().clone();
  }
  return weights;
}

// How far the variant moved each quantisable layer's effective weight from the trained one.
std::vector<std::pair<std::string, double>> layer_errors(Network& network,
                                                         const std::map<std::string, at::Tensor>& trained) {
  torch::NoGradGuard no_grad;
  std::vector<std::pair<std::string, double>> errors;
  for (const auto& [name, layer] : network.quantizable_layers()) {
    if (!layer->has_weight()) continue;
    const at::Tensor& reference = trained.at(name);
    const double norm = reference.norm().item<double>();
    const double difference = (layer->effective_weight() - reference).norm().item<double>();
    errors.emplace_back(name, norm > 0 ? difference / norm : 0.0);
  }
  return errors;
}

// The accuracy table's rows: variant, [series,] the variant's values, loss, top-1, [top-5,] ratios.
class AccuracyRows {
 public:
  AccuracyRows(Table& table, const std::vector<Variant>& variants, bool top5, const Evaluation& trained)
      : table_(table), top5_(top5), classification_(trained.top1 >= 0), trained_(trained),
        series_(std::any_of(variants.begin(), variants.end(), [](const Variant& v) { return !v.series.empty(); })) {
    table.columns.push_back("variant");
    if (series_) table.columns.push_back("series");
    for (const auto& [name, value] : variants.front().values) table.columns.push_back(name);
    // A regression (no top-1) has its loss alone.
    table.columns.push_back("loss");
    if (classification_) table.columns.push_back("top1");
    if (top5_) table.columns.push_back("top5");
    table.columns.push_back("loss_ratio");
    if (classification_) table.columns.push_back("top1_ratio");
    add("float", "float", std::vector<std::string>(variants.front().values.size(), "-"), trained);
  }

  void add(const std::string& label, const std::string& series, const std::vector<std::string>& values,
           const Evaluation& e) {
    std::vector<std::string> row{label};
    if (series_) row.push_back(series);
    row.insert(row.end(), values.begin(), values.end());
    row.push_back(fmt::format("{:.6f}", e.loss));
    if (classification_) row.push_back(fmt::format("{:.4f}", e.top1));
    if (top5_) row.push_back(fmt::format("{:.4f}", e.top5));
    row.push_back(trained_.loss > 0 ? fmt::format("{:.4f}", e.loss / trained_.loss) : "-");
    if (classification_) row.push_back(trained_.top1 > 0 ? fmt::format("{:.4f}", e.top1 / trained_.top1) : "-");
    table_.rows.push_back(std::move(row));
  }

 private:
  Table& table_;
  bool top5_;
  bool classification_;
  Evaluation trained_;
  bool series_;
};

}  // namespace

VariantTables sweep_variants(const std::string& name, Algorithm& algorithm, const std::vector<Variant>& variants,
                             Network& network, Calibration& calibration, Context& ctx, const FoldEnvironment& env,
                             const Evaluation& trained) {
  VariantTables tables;
  AccuracyRows accuracy(tables.accuracy, variants, env.top5, trained);
  tables.layer_error.columns = {"variant", "layer", "relative_error"};
  const NetworkState trained_state = snapshot(network);
  const std::map<std::string, at::Tensor> trained_weights = effective_weights(network);
  std::int64_t done = 0;
  for (const Variant& variant : variants) {
    restore(network, trained_state);
    in_hook(name, "apply_variant", [&] { algorithm.apply_variant(variant, network, calibration, ctx); });
    const Evaluation e = evaluate_split(env, network, Split::test);
    std::vector<std::string> values;
    for (const auto& [column, value] : variant.values) values.push_back(fmt::format("{:g}", value));
    accuracy.add(variant.label, variant.series, values, e);
    for (const auto& [layer, error] : layer_errors(network, trained_weights)) {
      tables.layer_error.rows.push_back({variant.label, layer, fmt::format("{:.6g}", error)});
    }
    ctx.progress("variants", ++done, static_cast<std::int64_t>(variants.size()));
  }
  restore(network, trained_state);
  return tables;
}

}  // namespace ql::core::run
