#include "quantlab/core/experiment_runner.hpp"

#include "quantlab/core/batch_loader.hpp"
#include "quantlab/core/data_parallel.hpp"
#include "quantlab/core/experiment_config.hpp"
#include "quantlab/core/experiment_store.hpp"
#include "quantlab/core/folds.hpp"
#include "quantlab/core/host_memory.hpp"
#include "quantlab/core/metrics_log.hpp"
#include "quantlab/core/report.hpp"
#include "quantlab/core/storage.hpp"
#include "quantlab/core/trainer.hpp"
#include "quantlab/core/unit_record.hpp"
#include "quantlab/sdk/algorithm.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/nn.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/utils.h>

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <unistd.h>

namespace ql::core {

namespace fs = std::filesystem;

namespace {

// Seed streams derived from the experiment seed, one per purpose.
enum SeedStream : std::uint64_t {
  kShuffleStream = 1,
  kAugmentStream = 2,
  kCalibrationStream = 3,
  kFoldStream = 4,
  kRankStream = 5,
  kPluginStreams = 100,
};

// The signal that asked the run to stop (0: none). A signal handler can do no more than set a
// flag; the training loop polls it after every step.
std::atomic<int> stop_signal{0};

extern "C" void request_stop(int signal) { stop_signal.store(signal); }

// Installs the SIGINT/SIGTERM handlers for the duration of a run. They are one-shot: a second
// Ctrl-C kills the process the usual way.
class StopOnSignals {
 public:
  StopOnSignals() {
    stop_signal.store(0);
    struct sigaction action {};
    action.sa_handler = request_stop;
    action.sa_flags = SA_RESETHAND;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, &old_int_);
    sigaction(SIGTERM, &action, &old_term_);
  }
  ~StopOnSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  StopOnSignals(const StopOnSignals&) = delete;
  StopOnSignals& operator=(const StopOnSignals&) = delete;
  static int requested() { return stop_signal.load(); }

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

// A private folder in the temporary directory, removed with everything in it.
class ScratchFolder {
 public:
  explicit ScratchFolder(const std::string& prefix) {
    std::string pattern = (fs::temp_directory_path() / (prefix + "XXXXXX")).string();
    QL_CHECK(::mkdtemp(pattern.data()) != nullptr, "cannot create a scratch folder {}: {}", pattern,
             std::strerror(errno));
    path_ = pattern;
  }
  ~ScratchFolder() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  ScratchFolder(const ScratchFolder&) = delete;
  ScratchFolder& operator=(const ScratchFolder&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// A plugin's hook failed; the message names the plugin and the hook.
class HookFailure : public Error {
 public:
  using Error::Error;
};

// Runs one hook of a plugin: whatever it throws becomes one line naming the plugin and hook.
template <typename Hook>
decltype(auto) in_hook(const std::string& plugin, std::string_view hook, Hook&& run) {
  try {
    return run();
  } catch (const HookFailure&) {
    throw;
  } catch (const ConfigError& e) {
    throw ConfigError(fmt::format("plugin '{}' failed in {}: {}", plugin, hook, e.what()));
  } catch (const std::exception& e) {
    throw HookFailure(fmt::format("plugin '{}' failed in {}: {}", plugin, hook, message_of(e)));
  } catch (...) {
    throw HookFailure(fmt::format("plugin '{}' failed in {}: it threw something that is not a std::exception", plugin,
                                  hook));
  }
}

struct RunState {
  const Splits* data;
  DatasetSpec spec;
  c10::Device device{c10::kCPU};
  std::int64_t eval_batch_size;
  std::size_t prefetch;
  bool top5;
  LossKind loss = LossKind::cross_entropy;
  Console* console;
  MetricsLog* metrics;
  std::string fold_label;  // "" or "fold 2/5: "
  DataParallel* world = nullptr;
};

// Evaluates on a split; in data-parallel training each rank takes every size-th sample and the
// sums are all-reduced, so every rank gets the whole split's figures.
Evaluation evaluate_split(const RunState& run, Network& network, Split split) {
  auto dataset = run.data->of(split);
  QL_CHECK(dataset != nullptr, "the problem has no {} split to evaluate on", to_string(split));
  std::vector<std::int64_t> order = sequential_order(dataset->size());
  if (run.world != nullptr) {
    std::vector<std::int64_t> mine;
    for (std::size_t i = static_cast<std::size_t>(run.world->rank()); i < order.size();
         i += static_cast<std::size_t>(run.world->size())) {
      mine.push_back(order[i]);
    }
    order = std::move(mine);
  }
  BatchLoader loader(dataset, std::move(order), run.eval_batch_size, 0, /*augment=*/false, run.prefetch);
  Evaluation e = evaluate(network, loader, run.device, run.top5, run.loss);
  if (run.world == nullptr) return e;
  const auto n = static_cast<double>(e.samples);
  std::vector<double> sums{e.loss * n, static_cast<double>(std::llround(e.top1 * n)),
                           e.top5 >= 0 ? static_cast<double>(std::llround(e.top5 * n)) : 0.0, n};
  run.world->all_reduce_sum(sums);
  Evaluation total;
  total.samples = std::llround(sums[3]);
  if (total.samples > 0) {
    total.loss = sums[0] / sums[3];
    total.top1 = sums[1] / sums[3];
    total.top5 = run.top5 ? sums[2] / sums[3] : -1.0;
  }
  return total;
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
    const std::string line = fmt::format("{}[{}] {}", run_.fold_label, plugin_, message);
    if (level == LogLevel::warning) run_.console->warn(line);
    else if (level == LogLevel::info) run_.console->info(line);
  }
  void scalar(std::string_view name, double value, std::int64_t step) override {
    run_.metrics->scalar(fmt::format("{}/{}", plugin_, name), value, step);
  }
  void histogram(std::string_view name, const at::Tensor& values, std::int64_t step) override {
    run_.metrics->histogram(fmt::format("{}/{}", plugin_, name), values, step);
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

// A table of rows of text cells, written as CSV for tools and as Markdown for people.
struct Table {
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> rows;

  std::string csv() const {
    std::string text = csv_line(columns) + "\n";
    for (const auto& row : rows) text += csv_line(row) + "\n";
    return text;
  }
  std::string markdown() const { return markdown_table(columns, rows); }
};

// The relative change ||W_variant - W_trained|| / ||W_trained|| of each quantisable layer's
// effective weight: how far the variant moved each layer from the trained network.
std::vector<std::pair<std::string, double>> layer_errors(Network& network, const std::map<std::string, at::Tensor>& trained) {
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

struct VariantTables {
  Table accuracy;
  Table layer_error;
};

VariantTables sweep(const std::string& name, Algorithm& algorithm, const std::vector<Variant>& variants,
                    Network& network, Calibration& calibration, Context& ctx, const RunState& run,
                    const Evaluation& trained) {
  VariantTables tables;
  Table& table = tables.accuracy;
  const bool series = std::any_of(variants.begin(), variants.end(), [](const Variant& v) { return !v.series.empty(); });
  table.columns.push_back("variant");
  if (series) table.columns.push_back("series");
  for (const auto& [name, value] : variants.front().values) table.columns.push_back(name);
  table.columns.insert(table.columns.end(), {"loss", "top1"});
  if (run.top5) table.columns.push_back("top5");
  table.columns.insert(table.columns.end(), {"loss_ratio", "top1_ratio"});
  tables.layer_error.columns = {"variant", "layer", "relative_error"};
  std::string series_of;  // the series of the row being added
  auto add_row = [&](const std::string& label, const std::vector<std::string>& values,
                     const Evaluation& e) {
    std::vector<std::string> row{label};
    if (series) row.push_back(label == "float" ? "float" : series_of);
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
  std::map<std::string, at::Tensor> trained_weights;
  for (const auto& [name, layer] : network.quantizable_layers()) {
    if (layer->has_weight()) trained_weights[name] = layer->effective_weight().detach().clone();
  }
  std::int64_t done = 0;
  for (const Variant& variant : variants) {
    restore(network, trained_state);
    in_hook(name, "apply_variant", [&] { algorithm.apply_variant(variant, network, calibration, ctx); });
    const Evaluation e = evaluate_split(run, network, Split::test);
    std::vector<std::string> values;
    for (const auto& [name, value] : variant.values) values.push_back(fmt::format("{:g}", value));
    series_of = variant.series;
    add_row(variant.label, values, e);
    for (const auto& [layer, error] : layer_errors(network, trained_weights)) {
      tables.layer_error.rows.push_back({variant.label, layer, fmt::format("{:.6g}", error)});
    }
    ctx.progress("variants", ++done, static_cast<std::int64_t>(variants.size()));
  }
  restore(network, trained_state);
  return tables;
}

// The checkpoint of a fold: network, optimiser, position (epoch, batch, step), the epoch's
// running totals, the default generator's state (dropout, ...), the best score so far and
// every algorithm's own state.
struct TrainingPosition {
  std::int64_t epoch = 0;  // the epoch in progress (= epochs completed when batch is 0)
  std::int64_t step = 0;   // optimiser steps so far
  EpochProgress progress;  // of the epoch in progress
  double best_score = -INFINITY;
  std::int64_t best_epoch = 0;
};

class FoldCheckpoints {
 public:
  FoldCheckpoints(fs::path dir, Network& network, torch::optim::Optimizer& optimizer,
                  std::vector<PluginPtr<Algorithm>>& algorithms, const std::vector<PluginChoice>& choices)
      : dir_(std::move(dir)), network_(network), optimizer_(optimizer), algorithms_(algorithms), choices_(choices) {}

  fs::path path(const std::string& name) const { return dir_ / "checkpoints" / (name + ".pt"); }

  // The checkpoint written last, for messages: "PATH (step N)", or "" before the first.
  const std::string& last_written() const { return last_written_; }

  void save(const std::string& name, const TrainingPosition& at) {
    const std::string written = fmt::format("{} (step {})", path(name).string(), at.step);
    save_checkpoint(path(name), [&](torch::serialize::OutputArchive& archive) {
      for (const auto& p : network_.named_parameters()) archive.write("model/" + p.key(), p.value().detach());
      for (const auto& b : network_.named_buffers()) archive.write("model/" + b.key(), b.value(), true);
      torch::serialize::OutputArchive optimizer_archive;
      optimizer_.save(optimizer_archive);
      archive.write("optimizer", optimizer_archive);
      archive.write("position", torch::tensor({at.epoch, at.step, at.progress.batches, at.progress.samples,
                                               at.progress.correct, at.best_epoch}));
      archive.write("totals", torch::tensor({at.progress.loss_sum, at.progress.seconds, at.best_score},
                                            torch::kFloat64));
      auto generator = at::detail::getDefaultCPUGenerator();
      archive.write("rng/cpu", generator.get_state());
      for (std::size_t i = 0; i < algorithms_.size(); ++i) {
        torch::serialize::OutputArchive state;
        in_hook(choices_[i].name, "save_state", [&] { algorithms_[i]->save_state(state); });
        archive.write(fmt::format("algorithm/{}", i), state);
      }
    });
    last_written_ = written;
  }

  // Checked against its checksum; in data-parallel training rank 0 reads the file and every
  // rank loads its bytes.
  TrainingPosition load(const std::string& name, DataParallel* world) {
    const fs::path file = path(name);
    std::string bytes = world == nullptr || world->is_root() ? read_checkpoint(file) : std::string();
    if (world != nullptr) bytes = world->broadcast_bytes(bytes);
    return load(file, [&](torch::serialize::InputArchive& a) { load_archive(a, bytes); });
  }

 private:
  TrainingPosition load(const fs::path& file, const std::function<void(torch::serialize::InputArchive&)>& open) {
    try {
      torch::serialize::InputArchive archive;
      open(archive);
      torch::NoGradGuard no_grad;
      for (auto& p : network_.named_parameters()) {
        at::Tensor value;
        archive.read("model/" + p.key(), value);
        p.value().copy_(value);
      }
      for (auto& b : network_.named_buffers()) {
        at::Tensor value;
        archive.read("model/" + b.key(), value, true);
        b.value().copy_(value);
      }
      torch::serialize::InputArchive optimizer_archive;
      archive.read("optimizer", optimizer_archive);
      optimizer_.load(optimizer_archive);
      at::Tensor position, totals, rng;
      archive.read("position", position);
      archive.read("totals", totals);
      archive.read("rng/cpu", rng);
      auto generator = at::detail::getDefaultCPUGenerator();
      generator.set_state(rng);
      for (std::size_t i = 0; i < algorithms_.size(); ++i) {
        torch::serialize::InputArchive state;
        archive.read(fmt::format("algorithm/{}", i), state);
        in_hook(choices_[i].name, "load_state", [&] { algorithms_[i]->load_state(state); });
      }
      const auto p = position.accessor<std::int64_t, 1>();
      const auto t = totals.accessor<double, 1>();
      TrainingPosition at;
      at.epoch = p[0];
      at.step = p[1];
      at.progress.batches = p[2];
      at.progress.samples = p[3];
      at.progress.correct = p[4];
      at.best_epoch = p[5];
      at.progress.loss_sum = t[0];
      at.progress.seconds = t[1];
      at.best_score = t[2];
      return at;
    } catch (const std::exception& e) {
      throw Error(fmt::format("{}: cannot resume from this checkpoint: {}", file.string(), message_of(e)));
    }
  }

  fs::path dir_;
  Network& network_;
  torch::optim::Optimizer& optimizer_;
  std::vector<PluginPtr<Algorithm>>& algorithms_;
  const std::vector<PluginChoice>& choices_;
  std::string last_written_;
};

// What every fold shares: the loaded experiment, its plugins' choices, the unit and its record.
struct Experiment {
  const ExperimentConfig& config;
  PluginRegistry& registry;
  Console& console;
  Problem& problem;
  Topology& topology;
  std::vector<PluginChoice> algorithm_choices;
  TrainingSettings settings;
  std::uint64_t seed = 0;
  c10::Device device{c10::kCPU};
  std::size_t prefetch = 0;
  bool top5 = false;
  bool step_scalars = true;
  std::int64_t histogram_every = 0;
  bool resuming = false;
  fs::path unit = {};
  UnitRecord record = {};
  DataParallel* world = nullptr;  // data-parallel training: this process's group
  bool root = true;               // writes the results unit (the only process, or rank 0)
};

std::string stopped_by() {
  const int signal = StopOnSignals::requested();
  return signal != 0 ? fmt::format("stopped by signal {}", signal) : std::string("stopped with another rank");
}

// Whether any rank asked to stop (the same answer on every rank).
bool stop_agreed(const Experiment& x) {
  if (x.world == nullptr) return StopOnSignals::requested() != 0;
  std::vector<double> flag{StopOnSignals::requested() != 0 ? 1.0 : 0.0};
  x.world->all_reduce_sum(flag);
  return flag[0] > 0;
}

struct FoldResult {
  Evaluation trained, result;
};

void update_record(Experiment& x) { write_unit_record(x.unit, x.record); }

FoldResult run_fold(Experiment& x, std::size_t k, const Splits& data) {
  const TrainingSettings& settings = x.settings;
  const std::size_t folds = x.record.folds.size();
  const fs::path fold_dir = x.unit / fmt::format("fold{}", k);
  fs::create_directories(fold_dir / "checkpoints");
  FoldRecord& record = x.record.folds[k];

  RunState run;
  run.data = &data;
  run.spec = x.problem.spec();
  run.device = x.device;
  run.eval_batch_size = settings.eval_batch_size;
  run.prefetch = x.prefetch;
  run.top5 = x.top5;
  run.loss = settings.loss;
  run.console = &x.console;
  run.fold_label = folds > 1 ? fmt::format("fold {}/{}: ", k + 1, folds) : "";
  run.world = x.world;

  torch::manual_seed(x.seed);
  std::shared_ptr<Network> network =
      in_hook(x.config.topology().name, "build", [&] { return x.topology.build(run.spec); });
  QL_CHECK(network != nullptr, "topology '{}' built no network", x.config.topology().name);
  network->to(run.device);
  std::vector<PluginPtr<Algorithm>> algorithms;
  for (const PluginChoice& choice : x.algorithm_choices) {
    algorithms.push_back(x.registry.create<Algorithm>(choice.name, choice.options));
  }
  std::vector<std::unique_ptr<HostContext>> contexts;
  for (std::size_t i = 0; i < algorithms.size(); ++i) {
    const PluginChoice& choice = x.algorithm_choices[i];
    contexts.push_back(std::make_unique<HostContext>(choice.options, choice.name, run,
                                                     derive_seed(x.seed, kPluginStreams + i), fold_dir / choice.name));
    in_hook(choice.name, "attach", [&] { algorithms[i]->attach(*network, *contexts[i]); });
  }
  if (x.world != nullptr) {
    // Same weights everywhere whatever each rank's initialisation did; then each rank its own
    // random stream (dropout).
    std::vector<at::Tensor> state = network->parameters();
    for (const at::Tensor& b : network->buffers()) state.push_back(b);
    x.world->broadcast(state);
    // And the algorithms' state (schedules, levels, generators) as rank 0 has it.
    for (std::size_t i = 0; i < algorithms.size(); ++i) {
      const std::string& name = x.algorithm_choices[i].name;
      std::string bytes;
      if (x.root) {
        torch::serialize::OutputArchive archive;
        in_hook(name, "save_state", [&] { algorithms[i]->save_state(archive); });
        std::ostringstream out;
        archive.save_to(out);
        bytes = std::move(out).str();
      }
      bytes = x.world->broadcast_bytes(bytes);
      if (!x.root) {
        torch::serialize::InputArchive archive;
        load_archive(archive, bytes);
        in_hook(name, "load_state", [&] { algorithms[i]->load_state(archive); });
      }
    }
    if (!x.root) torch::manual_seed(derive_seed(x.seed, kRankStream + static_cast<std::uint64_t>(x.world->rank())));
  }
  auto optimizer = make_optimizer(settings, network->parameters());
  FoldCheckpoints checkpoints(fold_dir, *network, *optimizer, algorithms, x.algorithm_choices);
  std::shared_ptr<GradientCodec> codec_holder;
  auto save = [&](const std::string& name, const TrainingPosition& position) {
    if (x.root) checkpoints.save(name, position);
  };

  TrainingPosition at;
  bool resume_here = x.resuming && x.root && fs::exists(checkpoints.path("last"));
  if (x.world != nullptr) resume_here = x.world->broadcast_bytes(resume_here ? "1" : "0") == "1";
  if (resume_here) {
    at = checkpoints.load("last", x.world);
    if (!x.root) {
      // The checkpoint holds rank 0's generator; the others draw their own stream again.
      torch::manual_seed(derive_seed(derive_seed(x.seed, kRankStream + static_cast<std::uint64_t>(x.world->rank())),
                                     static_cast<std::uint64_t>(at.step)));
    }
    x.console.info(fmt::format("{}resuming at epoch {} batch {} (step {}) from {}", run.fold_label, at.epoch + 1,
                               at.progress.batches, at.step, checkpoints.path("last").string()));
  }
  MetricsLog metrics(fold_dir, resume_here ? at.step : -1);
  run.metrics = &metrics;
  record.status = "running";
  update_record(x);

  StepOptions step_options;
  step_options.loss = settings.loss;
  step_options.workers = settings.simulated_workers;
  step_options.world = x.world;
  step_options.stop_requested = [] { return StopOnSignals::requested() != 0; };
  for (std::size_t i = 0; i < algorithms.size(); ++i) {
    if (auto codec = in_hook(x.algorithm_choices[i].name, "gradient_codec", [&] { return algorithms[i]->gradient_codec(); })) {
      QL_CHECK(step_options.codec == nullptr, "two algorithms offer a gradient codec; use one");
      step_options.codec = codec.get();
      codec_holder = codec;
      if (x.world != nullptr) codec->set_worker(x.world->rank(), x.world->size());
    }
  }
  const bool has_valid = data.valid != nullptr;
  const std::string best_metric = has_valid ? settings.best_metric : "train/loss";
  auto histograms = [&](std::int64_t step) {
    for (const auto& [name, layer] : network->quantizable_layers()) {
      if (layer->has_weight()) metrics.histogram("weights/" + name, layer->weight, step);
    }
  };
  if (x.histogram_every > 0 && at.step == 0) histograms(0);

  for (std::int64_t epoch = at.epoch; epoch < settings.epochs; ++epoch) {
    const double lr = scheduled_lr(settings, epoch);
    set_lr(*optimizer, lr);
    for (std::size_t i = 0; i < algorithms.size(); ++i) {
      in_hook(x.algorithm_choices[i].name, "on_epoch_begin", [&] { algorithms[i]->on_epoch_begin(epoch, *contexts[i]); });
    }
    std::vector<std::int64_t> order = epoch_order(data.train->size(), derive_seed(x.seed, kShuffleStream), epoch);
    std::int64_t batch_size = settings.batch_size;
    std::uint64_t augment_seed = derive_seed(derive_seed(x.seed, kAugmentStream), epoch);
    if (x.world != nullptr) {
      const auto total = static_cast<std::int64_t>(order.size());
      step_options.steps = settings.drop_last ? total / batch_size : (total + batch_size - 1) / batch_size;
      order = shard_order(order, batch_size, x.world->rank(), x.world->size(), settings.drop_last);
      batch_size /= x.world->size();
      if (!x.root) augment_seed = derive_seed(augment_seed, kRankStream + static_cast<std::uint64_t>(x.world->rank()));
    }
    BatchLoader loader(data.train, std::move(order), batch_size, augment_seed, /*augment=*/true, x.prefetch,
                       settings.drop_last && x.world == nullptr);
    const EpochProgress start = epoch == at.epoch ? at.progress : EpochProgress{};
    loader.start_at(start.batches);
    const std::string label = fmt::format("{}epoch {}/{}", run.fold_label, epoch + 1, settings.epochs);
    auto position = [&](const EpochProgress& progress) {
      TrainingPosition p = at;
      p.epoch = epoch;
      p.progress = progress;
      return p;
    };
    const std::int64_t epoch_batches = x.world != nullptr ? step_options.steps : loader.batches();
    // A loss that is no longer finite ends the run naming the step and what to resume from.
    auto stop_if_not_finite = [&](auto&& train) {
      try {
        return train();
      } catch (const NonFiniteLoss& e) {
        const std::string& checkpoint = checkpoints.last_written();
        throw Error(fmt::format("{}{} at step {} (epoch {}, batch {}); the last good checkpoint is {}", run.fold_label,
                                e.what(), at.step + 1, epoch + 1, e.batch,
                                checkpoint.empty() ? std::string("none (no checkpoint was written before)") : checkpoint));
      }
    };
    const EpochStats stats = stop_if_not_finite([&] { return train_epoch(
        *network, *optimizer, loader, run.device, start, [&](const EpochProgress& progress, double loss) {
          ++at.step;
          if (x.step_scalars) metrics.scalar("train/loss_step", loss, at.step);
          for (std::size_t i = 0; i < algorithms.size(); ++i) {
            in_hook(x.algorithm_choices[i].name, "on_step_end", [&] { algorithms[i]->on_step_end(at.step, *contexts[i]); });
          }
          x.console.progress(label, progress.batches, epoch_batches, fmt::format("loss {:.4f}", loss));
          const bool stop = progress.stop;
          const bool periodic = settings.checkpoint_every_steps > 0 && at.step % settings.checkpoint_every_steps == 0;
          if ((stop || periodic) && progress.batches < epoch_batches) {
            save("last", position(progress));
            metrics.flush();
            record.steps = at.step;
            update_record(x);
          }
          if (stop) {
            throw Interrupted(fmt::format("{} at epoch {} batch {}; checkpoint {}", stopped_by(), epoch + 1,
                                          progress.batches,
                                          checkpoints.path("last").string()));
          }
        },
        step_options); });
    std::string line = fmt::format("{}  train loss {:.4f} top1 {}", label, stats.loss(), percent(stats.top1()));
    metrics.scalar("train/loss", stats.loss(), at.step);
    metrics.scalar("train/top1", stats.top1(), at.step);
    metrics.scalar("train/lr", lr, at.step);
    metrics.scalar("train/images_per_second", stats.images_per_second(), at.step);
    metrics.scalar("epoch", static_cast<double>(epoch + 1), at.step);
    if (stats.sent_bytes > 0) {
      metrics.scalar("train/sent_bytes_per_step",
                     stats.sent_bytes / std::max<double>(1.0, static_cast<double>(stats.batches - start.batches)), at.step);
    }
    if (stats.coordinates > 0) {
      const double bits = 8.0 * stats.wire_bytes / stats.coordinates;
      metrics.scalar("train/bits_per_coordinate", bits, at.step);
      metrics.scalar("train/compression_ratio", 32.0 / bits, at.step);
      const std::int64_t steps_done = x.world != nullptr ? stats.batches - start.batches
                                                         : stats.batches / step_options.workers;
      metrics.scalar("train/wire_bytes_per_step", stats.wire_bytes / std::max<double>(1.0, static_cast<double>(steps_done)),
                     at.step);
      metrics.scalar("train/quantization_nvar", stats.quantization_error2 / std::max(stats.gradient_norm2, 1e-30),
                     at.step);
      if (step_options.codec != nullptr) {
        line += fmt::format("  {:.2f} bits/coord, quantisation nvar {:.3g}", bits,
                            stats.quantization_error2 / std::max(stats.gradient_norm2, 1e-30));
      }
    }
    if (step_options.workers > 1) {
      metrics.scalar("train/sgd_nvar", stats.worker_spread2 / std::max(stats.gradient_norm2, 1e-30), at.step);
    }

    const bool last = epoch + 1 == settings.epochs;
    double score = -stats.loss();
    if (has_valid && ((epoch + 1) % settings.valid_every == 0 || last)) {
      const Evaluation valid = evaluate_split(run, *network, Split::valid);
      line += fmt::format("  valid {}", describe(valid));
      metrics.scalar("valid/loss", valid.loss, at.step);
      metrics.scalar("valid/top1", valid.top1, at.step);
      if (valid.top5 >= 0) metrics.scalar("valid/top5", valid.top5, at.step);
      score = best_metric == "valid/loss" ? -valid.loss : valid.top1;
    } else if (has_valid) {
      score = -INFINITY;  // not evaluated this epoch
    }
    if (x.histogram_every > 0 && (epoch + 1) % x.histogram_every == 0) histograms(at.step);
    x.console.info(fmt::format("{}  lr {:.3g}  {:.0f} img/s  {:.1f} s", line, lr, stats.images_per_second(),
                               stats.seconds));
    at.epoch = epoch + 1;
    at.progress = {};
    if (score > at.best_score) {
      at.best_score = score;
      at.best_epoch = epoch + 1;
      save("best", at);
    }
    const bool stop = stop_agreed(x);
    if ((epoch + 1) % settings.checkpoint_every == 0 || last || stop) save("last", at);
    metrics.flush();
    record.epochs_done = epoch + 1;
    record.steps = at.step;
    record.best_metric = best_metric;
    record.best_value = best_metric == "valid/top1" ? at.best_score : -at.best_score;
    record.best_epoch = at.best_epoch;
    update_record(x);
    if (stop) {
      throw Interrupted(fmt::format("{} after epoch {}; checkpoint {}", stopped_by(), epoch + 1, checkpoints.path("last").string()));
    }
  }

  FoldResult result;
  const Split final_split = data.test ? Split::test : Split::valid;
  QL_CHECK(data.of(final_split) != nullptr, "the problem has neither a test nor a validation split");
  result.trained = evaluate_split(run, *network, final_split);
  x.console.info(fmt::format("{}trained network on {}: {}", run.fold_label, to_string(final_split),
                             describe(result.trained)));
  record.trained_top1 = result.trained.top1;
  record.trained_loss = result.trained.loss;

  HostCalibration calibration(run, derive_seed(x.seed, kCalibrationStream));
  for (std::size_t i = 0; i < algorithms.size(); ++i) {
    const std::string& name = x.algorithm_choices[i].name;
    const std::vector<Variant> variants = in_hook(name, "variants", [&] { return algorithms[i]->variants(); });
    if (variants.empty()) continue;
    QL_CHECK(data.test != nullptr, "the variants sweep of '{}' needs a test split", name);
    const VariantTables tables = sweep(name, *algorithms[i], variants, *network, calibration, *contexts[i], run,
                                       result.trained);
    write_file_atomically(fold_dir / fmt::format("{}_variants.csv", name), tables.accuracy.csv());
    write_file_atomically(fold_dir / fmt::format("{}_layer_error.csv", name), tables.layer_error.csv());
    x.console.info(fmt::format("{}variants of {} on the test split:\n{}", run.fold_label, name,
                               tables.accuracy.markdown()));
  }
  for (std::size_t i = 0; i < algorithms.size(); ++i) {
    in_hook(x.algorithm_choices[i].name, "post_training",
            [&] { algorithms[i]->post_training(*network, calibration, *contexts[i]); });
  }
  result.result = result.trained;
  if (!algorithms.empty()) {
    result.result = evaluate_split(run, *network, final_split);
    save("result", at);
    x.console.info(fmt::format("{}result after post-training on {}: {}", run.fold_label, to_string(final_split),
                               describe(result.result)));
  }
  record.result_top1 = result.result.top1;
  record.status = "done";
  metrics.flush();
  update_record(x);
  return result;
}

std::string resolved_config_text(const RunRequest& request, const ExperimentConfig& config) {
  return fmt::format("# resolved configuration of {}\n# quantlab {} fingerprint {}\n\n{}\n", request.experiment.string(),
                     QL_SDK_VERSION, build_fingerprint(), config.to_toml());
}

// The keys whose values differ between two resolved configurations, [run] and [storage] aside
// (threads, device and paths may change between a run and its resume).
std::vector<std::string> relevant_differences(const std::string& before, const std::string& after) {
  std::vector<std::string> differences;
  for (const std::string& line : config_differences(before, after)) {
    if (line.rfind("run.", 0) != 0 && line.rfind("storage.", 0) != 0) differences.push_back(line);
  }
  return differences;
}

}  // namespace

fs::path find_unit(const fs::path& logs, const std::string& problem, const std::string& topology,
                   const std::string& which) {
  const fs::path parent = logs / problem / topology;
  if (!which.empty() && which.find('/') != std::string::npos) {
    QL_CHECK(fs::is_directory(which), "--resume {}: no such results unit", which);
    return which;
  }
  if (!which.empty()) {
    std::string digits = which.rfind("exp", 0) == 0 ? which.substr(3) : which;
    QL_CHECK(!digits.empty() && digits.find_first_not_of("0123456789") == std::string::npos,
             "--resume {}: expected expNNNN, a number or a unit folder", which);
    const fs::path unit = parent / fmt::format("exp{:04d}", std::stoi(digits));
    QL_CHECK(fs::is_directory(unit), "--resume {}: {} does not exist", which, unit.string());
    return unit;
  }
  const std::vector<fs::path> units = list_units(parent);
  QL_CHECK(!units.empty(), "--resume: no results unit in {}", parent.string());
  return units.back();
}

RunSummary run_experiment(const RunRequest& request, PluginRegistry& registry, Console& console) {
  const auto started = std::chrono::steady_clock::now();
  const ExperimentConfig config = ExperimentConfig::load(request.experiment, request.overrides, registry);

  // Every option is read and checked before any work starts or any folder is made.
  const Config experiment_options = config.section("experiment");
  const auto seed = static_cast<std::uint64_t>(experiment_options.get_int("seed", 0, INT64_MAX));
  const Config run_options = config.section("run");
  const std::string device_choice = run_options.get_choice("device", {"auto", "cpu", "cuda"});
  const auto threads = run_options.get_int("threads", 0, 4096);
  const bool deterministic = run_options.get_bool("deterministic");
  const Config metrics_options = config.section("metrics");
  const StoragePaths storage = resolve_storage(config.section("storage"), request.experiment);

  // threads = 0: this host's cores, shared among the ranks running on it.
  const int local_ranks = request.world ? request.world->local_ranks : 1;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads > 0 ? static_cast<int>(threads) : std::max(1, cores / local_ranks));
  keep_freed_memory_for_reuse();
  if (deterministic) at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/false);

  auto problem = registry.create<Problem>(config.problem().name, config.problem().options.with_base_dir(storage.data));
  auto topology = registry.create<Topology>(config.topology().name, config.topology().options);
  Experiment x{config, registry, console, *problem, *topology, config.algorithms(),
               TrainingSettings::from(config.section("training"))};
  x.seed = seed;
  x.prefetch = static_cast<std::size_t>(run_options.get_int("prefetch", 0, 1024));
  x.step_scalars = metrics_options.get_bool("step_scalars");
  x.histogram_every = metrics_options.get_int("histogram_every", 0, 1'000'000);
  x.device = choose_device(device_choice);
  const auto metric_names = problem->metrics();
  x.top5 = std::find(metric_names.begin(), metric_names.end(), "top5") != metric_names.end();
  for (const PluginChoice& choice : x.algorithm_choices) registry.find(PluginKind::algorithm, choice.name);

  auto dataset = [&](Split split) {
    return in_hook(config.problem().name, fmt::format("dataset({})", to_string(split)),
                   [&] { return problem->dataset(split); });
  };
  Splits problem_data{dataset(Split::train), dataset(Split::valid), dataset(Split::test)};
  QL_CHECK(problem_data.train && problem_data.train->size() > 0, "problem '{}' has no training data",
           config.problem().name);
  const DatasetSpec spec = problem->spec();
  QL_CHECK(spec.num_classes > 1 && !spec.input_shape.empty(),
           "problem '{}' gave an invalid spec ({} classes, input rank {})", config.problem().name, spec.num_classes,
           spec.input_shape.size());
  if (x.settings.folds > 1) fold_indices(problem_data.train->size(), x.settings.folds, 0, 0);  // checks the count

  std::unique_ptr<DataParallel> world;
  std::optional<ScratchFolder> scratch;
  if (request.world) {
    const int ranks = request.world->size;
    if (x.settings.batch_size % ranks != 0) {
      throw ConfigError(fmt::format("training.batch_size = {} does not split evenly over {} data-parallel ranks",
                                    x.settings.batch_size, ranks));
    }
    if (x.settings.simulated_workers > 1) {
      throw ConfigError("training.simulated_workers > 1 and data-parallel ranks do not mix; use one of them");
    }
    world = std::make_unique<DataParallel>(*request.world);
    x.world = world.get();
    x.root = world->is_root();
    if (!x.root) {
      console.quiet(fmt::format("rank {}: ", world->rank()));
      scratch.emplace(fmt::format("quantlab-rank{}-", world->rank()));
    }
  }

  console.info(fmt::format("data: {} ({})", storage.data.string(), storage.data_origin));
  console.info(fmt::format("logs: {} ({})", storage.logs.string(), storage.logs_origin));
  const std::string config_text = resolved_config_text(request, config);
  x.resuming = request.resume.has_value();
  if (!x.root) {
    // The other ranks keep their files (metrics, plugin artefacts) in a scratch folder; rank 0
    // tells them which folds are done.
    x.unit = scratch->path();
    write_file_atomically(x.unit / "unit.toml", x.world->broadcast_bytes({}));
    x.record = read_unit_record(x.unit);
  } else if (x.resuming) {
    x.unit = find_unit(storage.logs, config.problem().name, config.topology().name, *request.resume);
    x.record = read_unit_record(x.unit);
    QL_CHECK(x.record.live_status() != "running", "{} is still running (pid {} on {})", x.unit.string(),
             x.record.pid, x.record.host);
    QL_CHECK(x.record.status != "done", "{} is already done; nothing to resume", x.unit.string());
    const auto differences = relevant_differences(read_text_file(x.unit / "config.toml"), config_text);
    if (!differences.empty()) {
      throw ConfigError(fmt::format("{} was run with another configuration ({}); resume it with the same "
                                    "experiment file and --set options",
                                    x.unit.string(), fmt::join(differences, "; ")));
    }
    ++x.record.resumes;
    x.record.message.clear();
  } else {
    x.unit = allocate_unit(storage.logs, config.problem().name, config.topology().name);
    write_file_atomically(x.unit / "config.toml", config_text);
    x.record.experiment = request.experiment.string();
    x.record.problem = config.problem().name;
    x.record.topology = config.topology().name;
    x.record.started = local_time_now();
    x.record.epochs = x.settings.epochs;
    x.record.quantlab_version = QL_SDK_VERSION;
    x.record.fingerprint = build_fingerprint();
    x.record.git_revision = git_revision_of(request.experiment);
    std::vector<std::pair<PluginKind, std::string>> used{{PluginKind::problem, config.problem().name},
                                                         {PluginKind::topology, config.topology().name}};
    for (const PluginChoice& choice : x.algorithm_choices) used.emplace_back(PluginKind::algorithm, choice.name);
    for (const auto& [kind, name] : used) {
      const PluginMetadata& p = registry.find(kind, name);
      x.record.plugins.push_back({std::string(to_string(kind)), p.name, p.version, p.fingerprint, p.path.string()});
    }
    x.record.folds.assign(static_cast<std::size_t>(x.settings.folds), FoldRecord{});
  }
  x.record.status = "running";
  x.record.pid = ::getpid();
  x.record.host = host_name();
  x.record.ended.clear();
  update_record(x);
  if (x.world != nullptr && x.root) x.world->broadcast_bytes(read_text_file(x.unit / "unit.toml"));
  if (!request.unit_file.empty() && x.root) write_file_atomically(request.unit_file, x.unit.string() + "\n");
  console.info(fmt::format("experiment {} -> {}{}", request.experiment.string(), x.unit.string(),
                           x.resuming ? " (resumed)" : ""));
  console.info(fmt::format("problem {} ({} train / {} valid / {} test), topology {}, device {}, {} threads{}",
                           config.problem().name, problem_data.train->size(),
                           problem_data.valid ? problem_data.valid->size() : 0,
                           problem_data.test ? problem_data.test->size() : 0, config.topology().name, x.device.str(),
                           at::get_num_threads(),
                           x.settings.folds > 1 ? fmt::format(", {} folds", x.settings.folds) : ""));
  if (x.world != nullptr) {
    console.info(fmt::format("data-parallel: {} ranks (rendezvous {}:{}), {} samples per rank and step",
                             x.world->size(), request.world->master_addr, request.world->master_port,
                             x.settings.batch_size / x.world->size()));
  }

  StopOnSignals stop_on_signals;
  RunSummary summary;
  summary.unit = x.unit;
  try {
    for (std::size_t k = 0; k < x.record.folds.size(); ++k) {
      if (x.record.folds[k].status == "done") continue;
      Splits data = problem_data;
      if (x.settings.folds > 1) {
        FoldIndices fold = fold_indices(problem_data.train->size(), x.settings.folds, static_cast<std::int64_t>(k),
                                        derive_seed(seed, kFoldStream));
        data.train = subset(problem_data.train, std::move(fold.train));
        data.valid = subset(problem_data.train, std::move(fold.valid));
      }
      const FoldResult result = run_fold(x, k, data);
      if (k == 0) {
        summary.trained = result.trained;
        summary.result = result.result;
      }
    }
  } catch (const Interrupted& e) {
    x.record.status = "interrupted";
    x.record.message = e.what();
    x.record.ended = local_time_now();
    update_record(x);
    throw;
  } catch (const std::exception& e) {
    x.record.status = "failed";
    x.record.message = message_of(e);
    x.record.ended = local_time_now();
    try {
      update_record(x);
    } catch (const std::exception&) {
      // The original failure (a full disk, say) is the one to report.
    }
    throw;
  }
  if (summary.trained.samples == 0 && !x.record.folds.empty()) {
    summary.trained.top1 = x.record.folds[0].trained_top1;
    summary.trained.loss = x.record.folds[0].trained_loss;
    summary.result.top1 = x.record.folds[0].result_top1;
  }
  x.record.status = "done";
  x.record.ended = local_time_now();
  update_record(x);
  if (!x.root) return summary;
  const ReportFiles report = write_report(x.unit);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (x.record.folds.size() > 1) console.info(report.summary);
  console.info(fmt::format("done in {:.1f} s; results in {} (report: {})", seconds, x.unit.string(),
                           report.markdown.string()));
  return summary;
}

}  // namespace ql::core
