#include "run/fold_run.hpp"

#include "quantlab/core/data_parallel.hpp"
#include "quantlab/core/experiment_store.hpp"
#include "quantlab/core/gradient_exchange.hpp"
#include "quantlab/core/metrics_log.hpp"
#include "quantlab/core/predictions.hpp"
#include "quantlab/core/report.hpp"
#include "run/algorithm_set.hpp"
#include "run/checkpoints.hpp"
#include "run/fit_loop.hpp"
#include "run/hooks.hpp"
#include "run/quantized_h5.hpp"
#include "run/result_model.hpp"
#include "run/variant_sweep.hpp"

#include <torch/optim/optimizer.h>
#include <torch/utils.h>

#include <fmt/format.h>

#include <map>

namespace ql::core::run {

namespace fs = std::filesystem;

namespace {

FoldEnvironment fold_environment(const Experiment& x, std::size_t k, const Splits& data) {
  const std::size_t folds = x.record.folds.size();
  FoldEnvironment env;
  env.data = &data;
  env.spec = x.problem.spec();
  env.device = x.device;
  env.precision = x.precision;
  env.eval_batch_size = x.settings.eval_batch_size;
  env.prefetch = x.prefetch;
  env.top5 = x.top5;
  env.loss = x.settings.loss;
  env.console = &x.console;
  env.fold_label = folds > 1 ? fmt::format("fold {}/{}: ", k + 1, folds) : "";
  env.world = x.world;
  return env;
}

std::shared_ptr<Network> build_network(const Experiment& x, const FoldEnvironment& env) {
  torch::manual_seed(x.seed);
  const std::string& name = x.config.topology().name;
  std::shared_ptr<Network> network = in_hook(name, "build", [&] { return x.topology.build(env.spec); });
  QL_CHECK(network != nullptr, "topology '{}' built no network", name);
  if (x.weights) {
    const WeightsLoad load = load_weights(*network, x.weights->tensors, x.weights_strict);
    std::string skipped;
    if (!load.missing.empty() || !load.unexpected.empty() || !load.mismatched.empty()) {
      skipped = fmt::format(" ({} missing, {} unexpected, {} of other shapes left as initialised)", load.missing.size(),
                            load.unexpected.size(), load.mismatched.size());
    }
    x.console.info(fmt::format("{}weights from {}: {} tensors{}", env.fold_label, x.weights->path.string(), load.loaded,
                               skipped));
  }
  network->to(env.device);
  return network;
}

std::uint64_t rank_seed(const Experiment& x) {
  return derive_seed(x.seed, kRankStream + static_cast<std::uint64_t>(x.world->rank()));
}

// Data-parallel: the same weights and algorithm state (schedules, levels, generators) on every
// rank, whatever each rank's initialisation did; then each rank its own random stream (dropout).
void share_rank0_state(const Experiment& x, Network& network, AlgorithmSet& algorithms) {
  std::vector<at::Tensor> state = network.parameters();
  for (const at::Tensor& b : network.buffers()) state.push_back(b);
  x.world->broadcast(state);
  for (std::size_t i = 0; i < algorithms.slots().size(); ++i) {
    const std::string bytes = x.world->broadcast_bytes(x.root ? algorithms.state_bytes(i) : std::string());
    if (!x.root) algorithms.load_state_bytes(i, bytes);
  }
  if (!x.root) torch::manual_seed(rank_seed(x));
}

// Continues from the fold's last checkpoint when resuming and there is one (rank 0 decides).
bool resume_from_checkpoint(const Experiment& x, const FoldEnvironment& env, FoldCheckpoints& checkpoints,
                            TrainingPosition& at) {
  bool resume = x.resuming && x.root && fs::exists(checkpoints.path("last"));
  if (x.world != nullptr) resume = x.world->broadcast_bytes(resume ? "1" : "0") == "1";
  if (!resume) return false;
  at = checkpoints.load("last", x.world);
  // The checkpoint holds rank 0's generator; the others draw their own stream again.
  if (!x.root) torch::manual_seed(derive_seed(rank_seed(x), static_cast<std::uint64_t>(at.step)));
  x.console.info(fmt::format("{}resuming at epoch {} batch {} (step {}) from {}", env.fold_label, at.epoch + 1,
                             at.progress.batches, at.step, checkpoints.path("last").string()));
  return true;
}

// Each algorithm's variants, evaluated side by side on the test split.
void sweep_all_variants(const Experiment& x, const FoldEnvironment& env, const fs::path& fold_dir,
                        AlgorithmSet& algorithms, Network& network, Calibration& calibration,
                        const Evaluation& trained) {
  for (AlgorithmSlot& a : algorithms.slots()) {
    const std::vector<Variant> variants = in_hook(a.name, "variants", [&] { return a.plugin->variants(); });
    if (variants.empty()) continue;
    QL_CHECK(env.data->test != nullptr, "the variants sweep of '{}' needs a test split", a.name);
    const VariantTables tables =
        sweep_variants(a.name, *a.plugin, variants, network, calibration, *a.context, env, trained);
    write_file_atomically(fold_dir / fmt::format("{}_variants.csv", a.name), csv_table(tables.accuracy.columns, tables.accuracy.rows));
    write_file_atomically(fold_dir / fmt::format("{}_layer_error.csv", a.name), csv_table(tables.layer_error.columns, tables.layer_error.rows));
    x.console.info(fmt::format("{}variants of {} on the test split:\n{}", env.fold_label, a.name,
                               markdown_table(tables.accuracy.columns, tables.accuracy.rows)));
  }
}

// Records `quantizer`, which quantises the activation `name`: its description and affine grid.
void record_activation(ResultRecord& record, const std::string& name, const Quantizer& quantizer) {
  record.quantizers[name] = quantizer.describe();
  if (auto grid = quantizer.affine_grid()) record.grids.emplace(name, *grid);
}

// The network as it computes after post-training: every weight behind a quantiser replaced by
// its quantised value and the slot emptied (so nothing is quantised twice), for every
// algorithm alike. Returns the record of each such tensor (its quantiser description and
// integer form) and of each quantised activation, which stays quantised.
ResultRecord keep_effective_weights(Network& network) {
  torch::NoGradGuard no_grad;
  ResultRecord record;
  if (network.input_quantizer()) record_activation(record, "input", *network.input_quantizer());
  for (const auto& [name, layer] : network.quantizable_layers()) {
    if (layer->output_quantizer()) record_activation(record, name + ".output", *layer->output_quantizer());
    if (!layer->has_weight() || !layer->weight_quantizer()) continue;
    const at::Tensor value = layer->effective_weight();
    record.quantizers[name + ".weight"] = layer->weight_quantizer()->describe();
    if (auto form = layer->weight_quantizer()->integer_form(layer->weight.detach())) {
      record.integer_forms.emplace(name + ".weight", std::move(*form));
    }
    layer->weight.copy_(value);
    layer->set_weight_quantizer(nullptr);
  }
  return record;
}

// Up to this many classes a fold writes the confusion matrix of its kept network.
constexpr std::int64_t kConfusionClasses = 100;

// [export]: the kept result's model, written after the result is kept, so that a network the
// export refuses loses nothing.
void export_result(const Experiment& x, const FoldEnvironment& env, Network& network, const ResultRecord& kept,
                   const fs::path& fold_dir) {
  const fs::path file = fold_dir / "result.onnx";
  try {
    write_result_model(network, x.problem.spec(), x.config, x.unit, kept, x.exporting.model, file);
  } catch (const Error& e) {
    throw Error(fmt::format("{}export to ONNX: {} (the fold is done and its result kept)", env.fold_label, e.what()));
  }
  x.console.info(fmt::format("{}exported {} (ONNX opset {}, {:.1f} MB)", env.fold_label, file.string(),
                             x.exporting.model.opset, static_cast<double>(fs::file_size(file)) / 1e6));
}

}  // namespace

FoldResult run_fold(Experiment& x, std::size_t k, const Splits& data) {
  const fs::path fold_dir = x.unit / fmt::format("fold{}", k);
  fs::create_directories(fold_dir / "checkpoints");
  FoldRecord& record = x.record.folds[k];
  FoldEnvironment env = fold_environment(x, k, data);

  std::shared_ptr<Network> network = build_network(x, env);
  AlgorithmSet algorithms(x.registry, x.algorithm_choices, env, x.seed, kPluginStreams, fold_dir);
  algorithms.attach(*network);
  if (x.world != nullptr) share_rank0_state(x, *network, algorithms);
  auto optimizer = make_optimizer(x.settings, network->parameters());
  FoldCheckpoints checkpoints(fold_dir, *network, *optimizer, algorithms);
  TrainingPosition at;
  const bool resumed = resume_from_checkpoint(x, env, checkpoints, at);
  MetricsLog metrics(fold_dir, resumed ? at.step : -1);
  env.metrics = &metrics;
  record.status = "running";
  update_record(x);

  auto exchange = make_gradient_exchange(x.settings.simulated_workers, algorithms.gradient_codec(), x.world);
  FitLoop(x, env, record, *network, *optimizer, algorithms, *exchange, checkpoints, metrics).run(at);

  FoldResult result;
  const Split final_split = data.test ? Split::test : Split::valid;
  QL_CHECK(data.of(final_split) != nullptr, "the problem has neither a test nor a validation split");
  // Predictions are the best classes of each sample: a regression has none.
  const bool classification = is_classification(x.settings.loss);
  std::vector<std::pair<std::string, Predictions>> predictions{{"trained", {}}};
  auto predictions_of = [&] { return classification ? &predictions.back().second : nullptr; };
  result.trained = evaluate_split(env, *network, final_split, predictions_of());
  x.console.info(fmt::format("{}trained network on {}: {}", env.fold_label, to_string(final_split),
                             describe(result.trained)));
  record.trained_top1 = result.trained.top1;
  record.trained_loss = result.trained.loss;

  HostCalibration calibration(env, derive_seed(x.seed, kCalibrationStream));
  sweep_all_variants(x, env, fold_dir, algorithms, *network, calibration, result.trained);
  algorithms.post_training(*network, calibration);
  ResultRecord kept = algorithms.empty() ? ResultRecord{} : keep_effective_weights(*network);
  kept.input_encoding = data.train->input_encoding();
  result.result = result.trained;
  if (!algorithms.empty()) {
    predictions.emplace_back("result", Predictions{});
    result.result = evaluate_split(env, *network, final_split, predictions_of());
    if (x.root) checkpoints.save("result", at, kept);
    x.console.info(fmt::format("{}result after post-training on {}: {}", env.fold_label, to_string(final_split),
                               describe(result.result)));
  }
  if (x.root && classification) {
    write_predictions_h5(fold_dir / "predictions.h5", std::string(to_string(final_split)), predictions);
    // The kept network's confusion matrix, for the report, where it stays readable.
    if (env.spec.num_classes <= kConfusionClasses && !env.spec.class_names.empty()) {
      write_file_atomically(fold_dir / "confusion.csv", confusion_csv(predictions.back().second, env.spec.class_names));
    }
  }
  record.result_top1 = result.result.top1;
  record.result_loss = result.result.loss;
  record.status = "done";
  metrics.flush();
  update_record(x);
  if (x.root && x.exporting.onnx) export_result(x, env, *network, kept, fold_dir);
  if (x.root && x.exporting.h5) {
    write_quantized_h5(fold_dir / "quantized.h5", *network, kept, read_text_file(x.unit / "config.toml"));
    x.console.info(fmt::format("{}exported {}", env.fold_label, (fold_dir / "quantized.h5").string()));
  }
  return result;
}

}  // namespace ql::core::run
