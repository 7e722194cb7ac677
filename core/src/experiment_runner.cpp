// The recipe of a run, top to bottom: read and check every option, build the plugins, load the
// data, join the data-parallel group, open the results unit, run each fold, write the report.
// The parts live in core/src/run/: unit_lifecycle (the unit and its record), fold_run (one
// fold), fit_loop (training), checkpoints, variant_sweep, host_context and algorithm_set.
#include "quantlab/core/experiment_runner.hpp"

#include "quantlab/core/data_parallel.hpp"
#include "quantlab/core/experiment_config.hpp"
#include "quantlab/core/experiment_store.hpp"
#include "quantlab/core/folds.hpp"
#include "quantlab/core/gradient_exchange.hpp"
#include "quantlab/core/host_memory.hpp"
#include "quantlab/core/report.hpp"
#include "quantlab/core/storage.hpp"
#include "quantlab/sdk/algorithm.hpp"
#include "run/fold_run.hpp"
#include "run/host_context.hpp"
#include "run/hooks.hpp"
#include "run/scratch_folder.hpp"
#include "run/signals.hpp"
#include "run/unit_lifecycle.hpp"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <thread>

namespace ql::core {

namespace fs = std::filesystem;
using run::Experiment;

namespace {

// [run] device: auto, cpu, cuda or cuda:N. A malformed value, or a GPU that is not there, is a
// ConfigError (exit 2) naming what LibTorch sees.
c10::Device choose_device(const Config& run_options) {
  const std::string choice = run_options.get_string("device");
  if (choice == "cpu") return c10::kCPU;
  if (choice == "auto") return torch::cuda::is_available() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  const std::string digits = choice == "cuda" ? "0" : choice.rfind("cuda:", 0) == 0 ? choice.substr(5) : "";
  if (digits.empty() || digits.size() > 3 || digits.find_first_not_of("0123456789") != std::string::npos) {
    throw ConfigError(run_options.error_message(
        "device", fmt::format("expected \"auto\", \"cpu\", \"cuda\" or \"cuda:N\", got \"{}\"", choice)));
  }
  const int index = std::stoi(digits);
  const auto count = static_cast<int>(torch::cuda::device_count());
  if (count == 0) {
    throw ConfigError(run_options.error_message(
        "device", fmt::format("\"{}\" asks for CUDA, but none is available (this build: {}; LibTorch sees no CUDA "
                              "device)", choice, QL_DEVICE_KIND)));
  }
  if (index >= count) {
    throw ConfigError(run_options.error_message(
        "device", fmt::format("\"{}\" is not here: LibTorch sees {} CUDA device{} (cuda:0 to cuda:{})", choice,
                              count, count == 1 ? "" : "s", count - 1)));
  }
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
}

// [run]: threads (0: this host's cores shared among its ranks), determinism, device, prefetch.
void apply_run_options(Experiment& x, const Config& run_options, const RunRequest& request) {
  const auto threads = run_options.get_int("threads", 0, 4096);
  const bool deterministic = run_options.get_bool("deterministic");
  x.prefetch = static_cast<std::size_t>(run_options.get_int("prefetch", 0, 1024));
  const int local_ranks = request.world ? request.world->local_ranks : 1;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads > 0 ? static_cast<int>(threads) : std::max(1, cores / local_ranks));
  keep_freed_memory_for_reuse();
  x.device = choose_device(run_options);
  if (request.world) {
    const bool explicit_index = run_options.get_string("device").rfind("cuda:", 0) == 0;
    x.device = rank_device(x.device, explicit_index, *request.world, static_cast<int>(torch::cuda::device_count()));
  }
  x.precision = run_options.get_enum<Precision>("precision", {{"fp32", Precision::fp32}, {"bf16", Precision::bf16}});
  if (deterministic) {
    // cuBLAS is deterministic only with a fixed workspace, which it reads when first used.
    if (x.device.is_cuda()) setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
    at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/false);
    at::globalContext().setDeterministicCuDNN(true);
    at::globalContext().setBenchmarkCuDNN(false);
  } else {
    // cuDNN times its algorithms on the first batch of each shape and keeps the fastest.
    at::globalContext().setBenchmarkCuDNN(x.device.is_cuda());
  }
}

// Every algorithm is built once from its options before any data is read, so that a bad option
// is reported before minutes of loading (each fold builds its own afterwards).
void check_algorithm_options(Experiment& x) {
  for (const PluginChoice& choice : x.algorithm_choices) x.registry.create<Algorithm>(choice.name, choice.options);
}

// The problem's splits; without a validation split of its own, the host holds one out of the
// training data, the same seeded way for every problem.
Splits load_splits(const Experiment& x, Log& log) {
  const std::string& name = x.config.problem().name;
  auto dataset = [&](Split split) {
    return run::in_hook(name, fmt::format("dataset({})", to_string(split)),
                        [&] { return x.problem.dataset(split, log); });
  };
  Splits data{dataset(Split::train), dataset(Split::valid), dataset(Split::test)};
  QL_CHECK(data.train && data.train->size() > 0, "problem '{}' has no training data", name);
  if (data.valid == nullptr && x.settings.valid_fraction > 0) {
    const FoldIndices split = hold_out_indices(data.train->size(), x.settings.valid_fraction, x.settings.hold_out_seed);
    QL_CHECK(!split.train.empty(), "training.valid_fraction = {} leaves no training data", x.settings.valid_fraction);
    if (!split.valid.empty()) data.valid = subset(data.train, split.valid);
    data.train = subset(data.train, split.train);
  }
  const DatasetSpec spec = x.problem.spec();
  const bool outputs_valid = spec.task == Task::regression ? spec.target_size > 0 : spec.num_classes > 1;
  QL_CHECK(outputs_valid && !spec.input_shape.empty(), "problem '{}' gave an invalid spec ({} {}, input rank {})", name,
           spec.output_size(), spec.task == Task::regression ? "target components" : "classes", spec.input_shape.size());
  if (x.settings.folds > 1) fold_indices(data.train->size(), x.settings.folds, 0, 0);  // checks the count
  return data;
}

// Joins the data-parallel group when the request names one; ranks other than 0 go quiet.
std::unique_ptr<DataParallel> join_world(Experiment& x, const RunRequest& request) {
  if (!request.world) return nullptr;
  const int ranks = request.world->size;
  if (x.settings.batch_size % ranks != 0) {
    throw ConfigError(fmt::format("training.batch_size = {} does not split evenly over {} data-parallel ranks",
                                  x.settings.batch_size, ranks));
  }
  check_exchange_settings(x.settings.simulated_workers, /*data_parallel=*/true);
  auto world = std::make_unique<DataParallel>(*request.world, x.device);
  x.world = world.get();
  x.root = world->is_root();
  if (!x.root) x.console.quiet(fmt::format("rank {}: ", world->rank()));
  return world;
}

void announce(const Experiment& x, const RunRequest& request, const Splits& data) {
  const ExperimentConfig& config = x.config;
  x.console.info(fmt::format("experiment {} -> {}{}", request.experiment.string(), x.unit.string(),
                             x.resuming ? " (resumed)" : ""));
  x.console.info(fmt::format("problem {} ({} train / {} valid / {} test), topology {}, device {}{}, {} threads{}",
                             config.problem().name, data.train->size(), data.valid ? data.valid->size() : 0,
                             data.test ? data.test->size() : 0, config.topology().name, x.device.str(),
                             x.precision == Precision::bf16 ? " (bf16 autocast)" : "", at::get_num_threads(),
                             x.settings.folds > 1 ? fmt::format(", {} folds", x.settings.folds) : ""));
  if (x.world != nullptr) {
    x.console.info(fmt::format("data-parallel: {} ranks over {} (rendezvous {}:{}), {} samples per rank and step",
                               x.world->size(), to_string(x.world->backend()), request.world->master_addr,
                               request.world->master_port,
                               x.settings.batch_size / x.world->size()));
  }
}

// Every fold not yet done; fold 0's figures are the summary's.
RunSummary run_folds(Experiment& x, const Splits& problem_data) {
  RunSummary summary;
  summary.unit = x.unit;
  for (std::size_t k = 0; k < x.record.folds.size(); ++k) {
    if (x.record.folds[k].status == "done") continue;
    Splits data = problem_data;
    if (x.settings.folds > 1) {
      FoldIndices fold = fold_indices(problem_data.train->size(), x.settings.folds, static_cast<std::int64_t>(k),
                                      derive_seed(x.seed, run::kFoldStream));
      data.train = subset(problem_data.train, std::move(fold.train));
      data.valid = subset(problem_data.train, std::move(fold.valid));
    }
    const run::FoldResult result = run::run_fold(x, k, data);
    if (k == 0) {
      summary.trained = result.trained;
      summary.result = result.result;
    }
  }
  if (summary.trained.samples == 0 && !x.record.folds.empty()) {  // fold 0 was done before a resume
    summary.trained.top1 = x.record.folds[0].trained_top1;
    summary.trained.loss = x.record.folds[0].trained_loss;
    summary.result.top1 = x.record.folds[0].result_top1;
  }
  return summary;
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

  // Every option is read and checked before any data is read or any folder is made.
  const auto seed = static_cast<std::uint64_t>(config.section("experiment").get_int("seed", 0, INT64_MAX));
  const Config metrics_options = config.section("metrics");
  const StoragePaths storage = resolve_storage(config.section("storage"), request.experiment);
  run::ConsoleLog problem_log(console, config.problem().name);  // outlives the problem and its datasets
  auto problem = registry.create<Problem>(config.problem().name, config.problem().options.with_base_dir(storage.data));
  auto topology = registry.create<Topology>(config.topology().name, config.topology().options);
  const Task task = run::in_hook(config.problem().name, "spec()", [&] { return problem->spec().task; });
  Experiment x{config, registry, console, *problem, *topology, config.algorithms(),
               TrainingSettings::from(config.section("training"), task)};
  x.seed = seed;
  x.step_scalars = metrics_options.get_bool("step_scalars");
  x.histogram_every = metrics_options.get_int("histogram_every", 0, 1'000'000);
  apply_run_options(x, config.section("run"), request);
  const Config export_options = config.section("export");
  const auto format = export_options.get_enum<run::ExportFormat>(
      "format", {{"none", run::ExportFormat::none},
                 {"onnx", run::ExportFormat::onnx},
                 {"h5", run::ExportFormat::h5},
                 {"onnx+h5", run::ExportFormat::onnx_and_h5}});
  x.exporting.onnx = format == run::ExportFormat::onnx || format == run::ExportFormat::onnx_and_h5;
  x.exporting.h5 = format == run::ExportFormat::h5 || format == run::ExportFormat::onnx_and_h5;
  x.exporting.model.opset = static_cast<int>(export_options.get_int("opset", 13, 21));
  x.exporting.model.fold_batch_norm = export_options.get_bool("fold_batch_norm");
  const Config& topology_options = config.topology().options;
  if (const std::string weights = topology_options.get_string("weights"); !weights.empty()) {
    // Relative to the experiment file, as a user writes it.
    const fs::path path = fs::path(weights).is_absolute() ? fs::path(weights) : request.experiment.parent_path() / weights;
    x.weights = read_weights_file(path);
    x.weights_strict = topology_options.get_bool("weights_strict");
  }
  if (x.exporting.model.opset != 13 && x.exporting.model.opset != 21) {
    throw ConfigError(export_options.error_message("opset", "ONNX opset 13 or 21"));
  }
  const auto metric_names = problem->metrics();
  x.top5 = std::find(metric_names.begin(), metric_names.end(), "top5") != metric_names.end();
  check_algorithm_options(x);

  const Splits problem_data = load_splits(x, problem_log);
  const std::unique_ptr<DataParallel> world = join_world(x, request);
  std::optional<run::ScratchFolder> scratch;
  if (!x.root) scratch.emplace(fmt::format("quantlab-rank{}-", x.world->rank()));

  console.info(fmt::format("data: {} ({})", storage.data.string(), storage.data_origin));
  console.info(fmt::format("logs: {} ({})", storage.logs.string(), storage.logs_origin));
  x.resuming = request.resume.has_value();
  run::open_unit(x, request, storage, run::resolved_config_text(request, config), scratch ? scratch->path() : fs::path());
  if (!request.unit_file.empty() && x.root) write_file_atomically(request.unit_file, x.unit.string() + "\n");
  announce(x, request, problem_data);

  run::StopOnSignals stop_on_signals;
  RunSummary summary;
  try {
    summary = run_folds(x, problem_data);
  } catch (const Interrupted& e) {
    run::close_unit(x, "interrupted", e.what());
    throw;
  } catch (const std::exception& e) {
    try {
      run::close_unit(x, "failed", message_of(e));
    } catch (const std::exception&) {
      // The original failure (a full disk, say) is the one to report.
    }
    throw;
  }
  run::close_unit(x, "done");
  if (!x.root) return summary;
  const ReportFiles report = write_report(x.unit);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (x.record.folds.size() > 1) console.info(report.summary);
  console.info(fmt::format("done in {:.1f} s; results in {} (report: {})", seconds, x.unit.string(),
                           report.markdown.string()));
  return summary;
}

}  // namespace ql::core
