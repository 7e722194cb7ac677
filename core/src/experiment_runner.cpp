#include "quantlab/core/experiment_runner.hpp"

#include "quantlab/core/batch_loader.hpp"
#include "quantlab/core/experiment_config.hpp"
#include "quantlab/core/experiment_store.hpp"
#include "quantlab/core/trainer.hpp"
#include "quantlab/sdk/algorithm.hpp"
#include "quantlab/sdk/error.hpp"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/output-archive.h>
#include <torch/utils.h>

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <thread>

namespace ql::core {

namespace fs = std::filesystem;

namespace {

// Seed streams derived from the experiment seed, one per purpose.
enum SeedStream : std::uint64_t {
  kShuffleStream = 1,
  kAugmentStream = 2,
  kCalibrationStream = 3,
  kPluginStreams = 100,
};

// Scalar series of the run, one line per value, in fold0/metrics.csv.
class MetricsFile {
 public:
  explicit MetricsFile(const fs::path& path) : out_(path) {
    QL_CHECK(out_.good(), "cannot create {}", path.string());
    out_ << "series,step,value\n";
  }
  void scalar(std::string_view name, double value, std::int64_t step) {
    out_ << name << ',' << step << ',' << fmt::format("{:.9g}", value) << '\n';
  }
  void flush() {
    out_.flush();
    QL_CHECK(out_.good(), "cannot write the metrics file (disk full?)");
  }

 private:
  std::ofstream out_;
};

struct RunState {
  const Splits* data;
  DatasetSpec spec;
  c10::Device device{c10::kCPU};
  std::int64_t eval_batch_size;
  std::size_t prefetch;
  bool top5;
  Console* console;
  MetricsFile* metrics;
};

Evaluation evaluate_split(const RunState& run, Network& network, Split split) {
  auto dataset = run.data->of(split);
  QL_CHECK(dataset != nullptr, "the problem has no {} split to evaluate on", to_string(split));
  BatchLoader loader(dataset, sequential_order(dataset->size()), run.eval_batch_size, 0,
                     /*augment=*/false, run.prefetch);
  return evaluate(network, loader, run.device, run.top5);
}

class HostContext : public Context {
 public:
  HostContext(Config options, std::string plugin, const RunState& run, std::uint64_t seed,
              fs::path artifacts)
      : options_(std::move(options)), plugin_(std::move(plugin)), run_(run), seed_(seed),
        artifacts_(std::move(artifacts)) {}

  const Config& options() const override { return options_; }
  const DatasetSpec& spec() const override { return run_.spec; }
  c10::Device device() const override { return run_.device; }
  std::uint64_t seed() const override { return seed_; }
  const fs::path& artifacts_dir() const override {
    std::error_code error;
    fs::create_directories(artifacts_, error);
    QL_CHECK(!error, "cannot create {}: {}", artifacts_.string(), error.message());
    return artifacts_;
  }
  void log(LogLevel level, std::string_view message) override {
    const std::string line = fmt::format("[{}] {}", plugin_, message);
    if (level == LogLevel::warning) run_.console->warn(line);
    else if (level == LogLevel::info) run_.console->info(line);
  }
  void scalar(std::string_view name, double value, std::int64_t step) override {
    run_.metrics->scalar(name, value, step);
  }
  void histogram(std::string_view name, const at::Tensor& values, std::int64_t step) override {
    // Summarised until the HDF5/TensorBoard writers exist: min, max, mean, std.
    const at::Tensor v = values.detach().to(torch::kFloat64).flatten();
    if (v.numel() == 0) return;
    run_.metrics->scalar(fmt::format("{}/min", name), v.min().item<double>(), step);
    run_.metrics->scalar(fmt::format("{}/max", name), v.max().item<double>(), step);
    run_.metrics->scalar(fmt::format("{}/mean", name), v.mean().item<double>(), step);
    run_.metrics->scalar(fmt::format("{}/std", name), v.numel() > 1 ? v.std().item<double>() : 0.0, step);
  }
  void progress(std::string_view what, std::int64_t done, std::int64_t total) override {
    run_.console->progress(fmt::format("[{}] {}", plugin_, what), done, total);
  }
  Evaluation evaluate(Network& network, Split split) override {
    return evaluate_split(run_, network, split);
  }

 private:
  Config options_;
  std::string plugin_;
  const RunState& run_;
  std::uint64_t seed_;
  fs::path artifacts_;
};

class HostCalibration : public Calibration {
 public:
  HostCalibration(const RunState& run, std::uint64_t seed) : run_(run), seed_(seed) {}
  std::int64_t size() const override { return run_.data->train->size(); }
  void for_each_batch(std::int64_t max_samples,
                      const std::function<void(const Batch&)>& visit) override {
    std::vector<std::int64_t> order = epoch_order(size(), seed_, 0);
    order.resize(static_cast<std::size_t>(std::clamp<std::int64_t>(max_samples, 0, size())));
    BatchLoader loader(run_.data->train, std::move(order), run_.eval_batch_size, 0,
                       /*augment=*/false, run_.prefetch);
    while (auto batch = loader.next()) visit(*batch);
  }

 private:
  const RunState& run_;
  std::uint64_t seed_;
};

// Everything an algorithm's variant may change: parameters, buffers and quantiser slots.
struct NetworkState {
  std::vector<at::Tensor> tensors;
  std::vector<std::pair<std::shared_ptr<Quantizer>, std::shared_ptr<Quantizer>>> slots;
  std::shared_ptr<Quantizer> input;
};

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

void write_network(torch::serialize::OutputArchive& archive, Network& network) {
  for (const auto& p : network.named_parameters()) archive.write("model/" + p.key(), p.value().detach());
  for (const auto& b : network.named_buffers()) archive.write("model/" + b.key(), b.value(), true);
}

std::string percent(double fraction) {
  return fraction < 0 ? "-" : fmt::format("{:.2f}%", 100.0 * fraction);
}

std::string describe(const Evaluation& e) {
  std::string text = fmt::format("loss {:.4f} top1 {}", e.loss, percent(e.top1));
  if (e.top5 >= 0) text += fmt::format(" top5 {}", percent(e.top5));
  return text;
}

c10::Device choose_device(const std::string& choice) {
  if (choice == "cpu") return c10::kCPU;
  const bool cuda = torch::cuda::is_available();
  if (choice == "cuda") {
    QL_CHECK(cuda, "[run] device = \"cuda\" but LibTorch sees no CUDA device");
    return c10::kCUDA;
  }
  return cuda ? c10::Device(c10::kCUDA) : c10::Device(c10::kCPU);
}

// The variants table of one algorithm: one row per variant plus the trained network.
struct SweepTable {
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> rows;

  std::string csv() const {
    std::string text = fmt::format("{}\n", fmt::join(columns, ","));
    for (const auto& row : rows) text += fmt::format("{}\n", fmt::join(row, ","));
    return text;
  }
  std::string markdown() const {
    std::string text = fmt::format("| {} |\n|", fmt::join(columns, " | "));
    for (std::size_t i = 0; i < columns.size(); ++i) text += " ---: |";
    text += "\n";
    for (const auto& row : rows) text += fmt::format("| {} |\n", fmt::join(row, " | "));
    return text;
  }
};

SweepTable sweep(Algorithm& algorithm, const std::vector<Variant>& variants, Network& network,
                 Calibration& calibration, Context& ctx, const RunState& run,
                 const Evaluation& trained) {
  SweepTable table;
  table.columns.push_back("variant");
  for (const auto& [name, value] : variants.front().values) table.columns.push_back(name);
  table.columns.insert(table.columns.end(), {"loss", "top1"});
  if (run.top5) table.columns.push_back("top5");
  table.columns.insert(table.columns.end(), {"loss_ratio", "top1_ratio"});
  auto add_row = [&](const std::string& label, const std::vector<std::string>& values,
                     const Evaluation& e) {
    std::vector<std::string> row{label};
    row.insert(row.end(), values.begin(), values.end());
    row.push_back(fmt::format("{:.6f}", e.loss));
    row.push_back(fmt::format("{:.4f}", e.top1));
    if (run.top5) row.push_back(fmt::format("{:.4f}", e.top5));
    row.push_back(trained.loss > 0 ? fmt::format("{:.4f}", e.loss / trained.loss) : "-");
    row.push_back(trained.top1 > 0 ? fmt::format("{:.4f}", e.top1 / trained.top1) : "-");
    table.rows.push_back(std::move(row));
  };
  add_row("float", std::vector<std::string>(variants.front().values.size(), "-"), trained);

  const NetworkState trained_state = snapshot(network);
  std::int64_t done = 0;
  for (const Variant& variant : variants) {
    restore(network, trained_state);
    algorithm.apply_variant(variant, network, calibration, ctx);
    const Evaluation e = evaluate_split(run, network, Split::test);
    std::vector<std::string> values;
    for (const auto& [name, value] : variant.values) values.push_back(fmt::format("{:g}", value));
    add_row(variant.label, values, e);
    ctx.progress("variants", ++done, static_cast<std::int64_t>(variants.size()));
  }
  restore(network, trained_state);
  return table;
}

}  // namespace

RunSummary run_experiment(const RunRequest& request, PluginRegistry& registry, Console& console) {
  const auto started = std::chrono::system_clock::now();
  const ExperimentConfig config = ExperimentConfig::load(request.experiment, request.overrides, registry);

  // Every option is read and checked before any work starts or any folder is made.
  const Config experiment = config.section("experiment");
  const auto seed = static_cast<std::uint64_t>(experiment.get_int("seed", 0, INT64_MAX));
  const Config run_options = config.section("run");
  const std::string device_choice = run_options.get_choice("device", {"auto", "cpu", "cuda"});
  const auto threads = run_options.get_int("threads", 0, 4096);
  const bool deterministic = run_options.get_bool("deterministic");
  const auto prefetch = static_cast<std::size_t>(run_options.get_int("prefetch", 0, 1024));
  const TrainingSettings settings = TrainingSettings::from(config.section("training"));
  fs::path logs = config.section("storage").get_string("logs");

  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  at::set_num_threads(threads > 0 ? static_cast<int>(threads) : static_cast<int>(cores));
  if (deterministic) at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/false);
  torch::manual_seed(seed);

  auto problem = registry.create<Problem>(config.problem().name, config.problem().options);
  auto topology = registry.create<Topology>(config.topology().name, config.topology().options);
  const std::vector<PluginChoice> algorithm_choices = config.algorithms();
  std::vector<PluginPtr<Algorithm>> algorithms;
  for (const PluginChoice& choice : algorithm_choices) {
    algorithms.push_back(registry.create<Algorithm>(choice.name, choice.options));
  }

  Splits data{problem->dataset(Split::train), problem->dataset(Split::valid),
                problem->dataset(Split::test)};
  QL_CHECK(data.train && data.train->size() > 0, "problem '{}' has no training data",
           config.problem().name);
  RunState run;
  run.data = &data;
  run.spec = problem->spec();
  QL_CHECK(run.spec.num_classes > 1 && !run.spec.input_shape.empty(),
           "problem '{}' gave an invalid spec ({} classes, input rank {})", config.problem().name,
           run.spec.num_classes, run.spec.input_shape.size());
  run.device = choose_device(device_choice);
  run.eval_batch_size = settings.eval_batch_size;
  run.prefetch = prefetch;
  const auto metric_names = problem->metrics();
  run.top5 = std::find(metric_names.begin(), metric_names.end(), "top5") != metric_names.end();
  run.console = &console;

  std::shared_ptr<Network> network = topology->build(run.spec);
  QL_CHECK(network != nullptr, "topology '{}' built no network", config.topology().name);
  network->to(run.device);

  const fs::path unit = allocate_unit(logs, config.problem().name, config.topology().name);
  const fs::path fold = unit / "fold0";
  fs::create_directories(fold / "checkpoints");
  write_file_atomically(
      unit / "config.toml",
      fmt::format("# resolved configuration of {} ({})\n# quantlab {} fingerprint {}\n\n{}\n",
                  request.experiment.string(), fmt::format("{:%Y-%m-%d %H:%M:%S}", fmt::localtime(std::chrono::system_clock::to_time_t(started))),
                  QL_SDK_VERSION, build_fingerprint(), config.to_toml()));
  MetricsFile metrics(fold / "metrics.csv");
  run.metrics = &metrics;

  std::int64_t parameters = 0;
  for (const auto& p : network->parameters()) parameters += p.numel();
  console.info(fmt::format("experiment {} -> {}", request.experiment.string(), unit.string()));
  console.info(fmt::format("problem {} ({} train / {} valid / {} test), topology {} ({} parameters), "
                           "device {}, {} threads",
                           config.problem().name, data.train->size(), data.valid ? data.valid->size() : 0,
                           data.test ? data.test->size() : 0, config.topology().name, parameters,
                           run.device.str(), at::get_num_threads()));

  std::vector<std::unique_ptr<HostContext>> contexts;
  for (std::size_t i = 0; i < algorithms.size(); ++i) {
    contexts.push_back(std::make_unique<HostContext>(
        algorithm_choices[i].options, algorithm_choices[i].name, run,
        derive_seed(seed, kPluginStreams + i), unit / algorithm_choices[i].name));
    algorithms[i]->attach(*network, *contexts[i]);
  }

  auto optimizer = make_optimizer(settings, network->parameters());
  auto save = [&](const fs::path& path, std::int64_t epoch) {
    save_checkpoint(path, [&](torch::serialize::OutputArchive& archive) {
      write_network(archive, *network);
      torch::serialize::OutputArchive optimizer_archive;
      optimizer->save(optimizer_archive);
      archive.write("optimizer", optimizer_archive);
      archive.write("epoch", torch::tensor(epoch));
      for (std::size_t i = 0; i < algorithms.size(); ++i) {
        torch::serialize::OutputArchive state;
        algorithms[i]->save_state(state);
        archive.write(fmt::format("algorithm/{}", i), state);
      }
    });
  };

  double best_score = -INFINITY;
  std::int64_t step = 0;
  for (std::int64_t epoch = 0; epoch < settings.epochs; ++epoch) {
    const double lr = scheduled_lr(settings, epoch);
    set_lr(*optimizer, lr);
    for (std::size_t i = 0; i < algorithms.size(); ++i) algorithms[i]->on_epoch_begin(epoch, *contexts[i]);
    BatchLoader loader(data.train, epoch_order(data.train->size(), derive_seed(seed, kShuffleStream), epoch),
                       settings.batch_size, derive_seed(derive_seed(seed, kAugmentStream), epoch),
                       /*augment=*/true, prefetch, settings.drop_last);
    const std::string label = fmt::format("epoch {}/{}", epoch + 1, settings.epochs);
    const EpochStats stats = train_epoch(*network, *optimizer, loader, run.device,
                                         [&](std::int64_t batch, double loss) {
                                           ++step;
                                           metrics.scalar("train/loss_step", loss, step);
                                           for (std::size_t i = 0; i < algorithms.size(); ++i) {
                                             algorithms[i]->on_step_end(step, *contexts[i]);
                                           }
                                           console.progress(label, batch, loader.batches(),
                                                            fmt::format("loss {:.4f}", loss));
                                         });
    std::string line = fmt::format("{}  train loss {:.4f} top1 {}", label, stats.loss, percent(stats.top1));
    metrics.scalar("train/loss", stats.loss, epoch + 1);
    metrics.scalar("train/top1", stats.top1, epoch + 1);
    metrics.scalar("train/lr", lr, epoch + 1);
    metrics.scalar("train/images_per_second", stats.images_per_second(), epoch + 1);

    const bool last = epoch + 1 == settings.epochs;
    double score = -stats.loss;  // without a validation split, the best epoch has the lowest train loss
    if (data.valid && ((epoch + 1) % settings.valid_every == 0 || last)) {
      const Evaluation valid = evaluate_split(run, *network, Split::valid);
      line += fmt::format("  valid {}", describe(valid));
      metrics.scalar("valid/loss", valid.loss, epoch + 1);
      metrics.scalar("valid/top1", valid.top1, epoch + 1);
      if (valid.top5 >= 0) metrics.scalar("valid/top5", valid.top5, epoch + 1);
      score = valid.top1;
    } else if (data.valid) {
      score = -INFINITY;  // not evaluated this epoch
    }
    console.info(fmt::format("{}  lr {:.3g}  {:.0f} img/s  {:.1f} s", line, lr,
                             stats.images_per_second(), stats.seconds));
    metrics.flush();
    if ((epoch + 1) % settings.checkpoint_every == 0 || last) save(fold / "checkpoints/last.pt", epoch + 1);
    if (score > best_score) {
      best_score = score;
      save(fold / "checkpoints/best.pt", epoch + 1);
    }
  }

  RunSummary summary;
  summary.unit = unit;
  const Split final_split = data.test ? Split::test : Split::valid;
  QL_CHECK(data.of(final_split) != nullptr, "the problem has neither a test nor a validation split");
  summary.trained = evaluate_split(run, *network, final_split);
  console.info(fmt::format("trained network on {}: {}", to_string(final_split), describe(summary.trained)));
  std::string report = fmt::format("# {}\n\nproblem `{}`, topology `{}`, seed {}\n\n"
                                   "trained network on the {} split: {}\n",
                                   request.experiment.stem().string(), config.problem().name,
                                   config.topology().name, seed, to_string(final_split),
                                   describe(summary.trained));

  HostCalibration calibration(run, derive_seed(seed, kCalibrationStream));
  for (std::size_t i = 0; i < algorithms.size(); ++i) {
    const std::vector<Variant> variants = algorithms[i]->variants();
    if (variants.empty()) continue;
    QL_CHECK(data.test != nullptr, "the variants sweep of '{}' needs a test split", algorithm_choices[i].name);
    const SweepTable table = sweep(*algorithms[i], variants, *network, calibration, *contexts[i], run,
                                   summary.trained);
    const fs::path table_file = unit / fmt::format("{}_variants.csv", algorithm_choices[i].name);
    write_file_atomically(table_file, table.csv());
    console.info(fmt::format("variants of {} on the test split ({}):\n{}", algorithm_choices[i].name,
                             table_file.string(), table.markdown()));
    report += fmt::format("\n## Variants of `{}` (test split)\n\n{}", algorithm_choices[i].name, table.markdown());
  }

  for (std::size_t i = 0; i < algorithms.size(); ++i) {
    algorithms[i]->post_training(*network, calibration, *contexts[i]);
  }
  summary.result = summary.trained;
  if (!algorithms.empty()) {
    summary.result = evaluate_split(run, *network, final_split);
    save(fold / "checkpoints/result.pt", settings.epochs);
    console.info(fmt::format("result after post-training on {}: {}", to_string(final_split),
                             describe(summary.result)));
    report += fmt::format("\nresult after post-training on the {} split: {}\n", to_string(final_split),
                          describe(summary.result));
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::system_clock::now() - started).count();
  report += fmt::format("\nwall time {:.1f} s\n", seconds);
  write_file_atomically(unit / "report.md", report);
  console.info(fmt::format("done in {:.1f} s; results in {}", seconds, unit.string()));
  return summary;
}

}  // namespace ql::core
