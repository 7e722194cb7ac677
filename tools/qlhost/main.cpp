// qlhost: the command line. Parses options, calls core, and is the one place where errors
// are caught and turned into one line and an exit code (0 ok, 1 failure, 2 bad usage/config).
#include "quantlab/core/cli.hpp"
#include "quantlab/core/experiment_config.hpp"
#include "quantlab/core/experiment_runner.hpp"
#include "quantlab/core/network_summary.hpp"
#include "quantlab/core/unit_export.hpp"
#include "quantlab/core/experiment_store.hpp"
#include "quantlab/core/local_launcher.hpp"
#include "quantlab/core/plugin_registry.hpp"
#include "quantlab/core/process.hpp"
#include "quantlab/core/report.hpp"
#include "quantlab/core/storage.hpp"
#include "quantlab/core/sweep.hpp"
#include "quantlab/core/unit_record.hpp"
#include "quantlab/sdk/error.hpp"

#include <boost/program_options.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

using ql::core::kExitOk;
using ql::core::kExitUsage;

constexpr char kUsage[] = R"(usage: qlhost COMMAND [OPTIONS]

commands:
  run EXP.toml [--set KEY=VALUE ...] [--resume [ID]] [--nproc N]
                                       train and evaluate the experiment EXP.toml, or resume one of
                                       its units (ID: expNNNN or a unit folder; none: the latest);
                                       --nproc N: data-parallel over N ranks on this host
  sweep EXP.toml --grid KEY=[V1,V2] ... [--jobs N] [--launcher local|slurm]
                                       one unit per combination of the grids' values
  report DIR                           write DIR/report.md and plots for a unit or a sweep
  experiments [PROBLEM[/TOPOLOGY]]     list the results units with status and results
  export UNIT [--format onnx|h5] [--opset 13|21] [--fold-batch-norm] [--fold K] [--output FILE]
                                       write a unit's kept result as an ONNX model (default:
                                       UNIT/foldK/result.onnx)
  summary EXP.toml [--set KEY=VALUE ...]
                                       print the experiment's network layer by layer (no data needed)
  plugins [--show NAME]                list the plugins found, or show one plugin's options
                                       (NAME "host": the experiment file's own sections)

Run 'qlhost COMMAND --help' for a command's options.
)";

std::vector<fs::path> as_paths(const std::vector<std::string>& dirs) {
  return {dirs.begin(), dirs.end()};
}

po::options_description common_options() {
  po::options_description options("common options");
  options.add_options()
      ("help,h", "show this help")
      ("plugin-dir", po::value<std::vector<std::string>>()->composing(),
       "search this directory (or load this .so) first; repeatable")
      ("verbose,v", "also list files skipped as not being plugins");
  return options;
}

po::variables_map parse(const std::vector<std::string>& args, const po::options_description& visible,
                        const po::options_description& hidden = {},
                        const po::positional_options_description& positional = {}) {
  po::options_description all;
  all.add(visible).add(hidden);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(all).positional(positional).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw ql::ConfigError(e.what());
  }
  return vm;
}

std::vector<std::string> plugin_dirs(const po::variables_map& vm) {
  return vm.count("plugin-dir") ? vm["plugin-dir"].as<std::vector<std::string>>()
                                : std::vector<std::string>{};
}

// Whose plugin files this run loads: QL_ALLOW_WRITABLE_PLUGINS=1 is the explicit override
// (in the environment, so that every rank of a data-parallel run sees it).
ql::core::PluginTrust plugin_trust() {
  const char* allow = std::getenv("QL_ALLOW_WRITABLE_PLUGINS");
  return allow && std::string_view(allow) == "1" ? ql::core::PluginTrust::any_writer : ql::core::PluginTrust::owner_only;
}

void report_refusals(const ql::core::PluginRegistry& registry, bool verbose) {
  for (const std::string& line : registry.refusals()) fmt::print(stderr, "warning: {}\n", line);
  for (const std::string& line : registry.warnings()) fmt::print(stderr, "warning: {}\n", line);
  if (verbose) {
    for (const std::string& line : registry.skipped()) fmt::print(stderr, "skipped: {}\n", line);
  }
}

// The registry of the command line's search path, its refusals and warnings reported.
std::unique_ptr<ql::core::PluginRegistry> open_registry(const po::variables_map& vm) {
  auto registry = std::make_unique<ql::core::PluginRegistry>(
      ql::core::default_search_path(as_paths(plugin_dirs(vm))), plugin_trust());
  report_refusals(*registry, vm.count("verbose") > 0);
  return registry;
}

int command_plugins(const std::vector<std::string>& args) {
  po::options_description options = common_options();
  options.add_options()("show", po::value<std::string>(), "print NAME's options, defaults and documentation");
  const po::variables_map vm = parse(args, options);
  if (vm.count("help")) {
    std::cout << "usage: qlhost plugins [--show NAME] [--plugin-dir DIR ...] [--verbose]\n\n" << options;
    return kExitOk;
  }
  const auto opened = open_registry(vm);
  ql::core::PluginRegistry& registry = *opened;
  if (vm.count("show")) {
    const std::string name = vm["show"].as<std::string>();
    if (name == "host") {
      fmt::print("host sections of an experiment file (defaults and documentation):\n{}",
                 ql::core::host_schema());
      return kExitOk;
    }
    const auto& p = registry.find_any(name);
    fmt::print("{} {} {}\n{}\nfile: {}\n\noptions (defaults and documentation):\n{}", ql::to_string(p.kind),
               p.name, p.version, p.summary, p.path.string(), p.default_config);
    return kExitOk;
  }
  fmt::print("{:<10} {:<16} {:<9} {}\n", "KIND", "NAME", "VERSION", "PATH");
  for (const auto& p : registry.plugins()) {
    fmt::print("{:<10} {:<16} {:<9} {}\n", ql::to_string(p.kind), p.name, p.version, p.path.string());
  }
  if (registry.plugins().empty()) {
    std::vector<std::string> searched;
    for (const fs::path& dir : registry.search_path()) searched.push_back(dir.string());
    fmt::print(stderr, "no plugins found; searched: {}\n", fmt::join(searched, ":"));
  }
  return kExitOk;
}

// What `run` and `summary` share: EXP.toml, --set overrides, the plugin registry. Empty
// `experiment` when --help was asked for (the usage is printed).
struct ExperimentCommand {
  std::string experiment;
  std::vector<std::string> overrides;
  std::unique_ptr<ql::core::PluginRegistry> registry;
};

ExperimentCommand parse_experiment_command(const std::string& name, const std::vector<std::string>& args,
                                           po::options_description extra = po::options_description(),
                                           po::variables_map* parsed = nullptr) {
  po::options_description options = common_options();
  options.add_options()("set", po::value<std::vector<std::string>>()->composing(),
                        "override a value of the experiment file, e.g. training.epochs=3; repeatable");
  options.add(extra);
  po::options_description hidden;
  hidden.add_options()("experiment", po::value<std::string>())(
      "unit-file", po::value<std::string>(), "write the unit's path to this file (used by sweeps)");
  po::positional_options_description positional;
  positional.add("experiment", 1);
  const po::variables_map vm = parse(args, options, hidden, positional);
  if (parsed) *parsed = vm;
  ExperimentCommand command;
  if (vm.count("help")) {
    std::cout << "usage: qlhost " << name << " EXP.toml [--set KEY=VALUE ...] [--plugin-dir DIR ...]\n\n" << options;
    return command;
  }
  if (!vm.count("experiment")) {
    throw ql::ConfigError(fmt::format("{}: missing the experiment file (qlhost {} EXP.toml)", name, name));
  }
  command.experiment = vm["experiment"].as<std::string>();
  if (vm.count("set")) command.overrides = vm["set"].as<std::vector<std::string>>();
  command.registry = open_registry(vm);
  return command;
}

// `args` without --nproc and its value (the ranks' own command line).
std::vector<std::string> without_nproc(const std::vector<std::string>& args) {
  std::vector<std::string> kept;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--nproc") {
      ++i;
    } else if (args[i].rfind("--nproc=", 0) != 0) {
      kept.push_back(args[i]);
    }
  }
  return kept;
}

int command_run(const std::vector<std::string>& args) {
  po::options_description extra;
  extra.add_options()("resume", po::value<std::string>()->implicit_value(""),
                      "continue a unit from its last checkpoint: expNNNN, a unit folder, or nothing for the "
                      "latest unit of the experiment's problem/topology")(
      "nproc", po::value<int>()->default_value(1),
      "data-parallel training with N ranks on this host (a rank started by a cluster launcher reads "
      "RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT or Slurm's variables instead)");
  po::variables_map vm;
  ExperimentCommand command = parse_experiment_command("run", args, extra, &vm);
  if (command.experiment.empty()) return kExitOk;
  ql::core::RunRequest request{command.experiment, command.overrides};
  if (vm.count("resume")) request.resume = vm["resume"].as<std::string>();
  if (vm.count("unit-file")) request.unit_file = vm["unit-file"].as<std::string>();
  request.world = ql::core::WorldSettings::from_environment();
  ql::core::Console console;
  const int nproc = vm["nproc"].as<int>();
  if (nproc < 1 || nproc > 1024) throw ql::ConfigError(fmt::format("--nproc {}: expected 1 to 1024", nproc));
  if (nproc > 1) {
    if (request.world) {
      throw ql::ConfigError(fmt::format("--nproc {} in a process that is already rank {} of {} (RANK/WORLD_SIZE or "
                                        "Slurm variables are set)",
                                        nproc, request.world->rank, request.world->size));
    }
    // Validate the experiment once here so that a bad file gives one error, not one per rank.
    ql::core::ExperimentConfig::load(request.experiment, request.overrides, *command.registry);
    std::vector<std::string> argv{ql::core::current_executable().string(), "run"};
    for (const std::string& arg : without_nproc(args)) argv.push_back(arg);
    return ql::core::run_local_ranks(argv, nproc, std::chrono::seconds(90), console);
  }
  ql::core::run_experiment(request, *command.registry, console);
  return kExitOk;
}

int command_sweep(const std::vector<std::string>& args) {
  po::options_description extra;
  extra.add_options()("grid", po::value<std::vector<std::string>>()->composing(),
                      "KEY=[V1,V2,...]: one unit per value (and per combination with the other grids)")(
      "jobs,j", po::value<int>()->default_value(1), "units run at the same time (local launcher)")(
      "launcher", po::value<std::string>()->default_value("local"),
      "local: run the units here; slurm: write a job-array script sweep.sbatch instead");
  po::variables_map vm;
  ExperimentCommand command = parse_experiment_command("sweep", args, extra, &vm);
  if (command.experiment.empty()) return kExitOk;
  if (!vm.count("grid")) throw ql::ConfigError("sweep: give at least one --grid KEY=[V1,V2,...]");
  ql::core::SweepRequest request;
  request.experiment = command.experiment;
  request.overrides = command.overrides;
  request.grids = vm["grid"].as<std::vector<std::string>>();
  request.jobs = vm["jobs"].as<int>();
  request.launcher = vm["launcher"].as<std::string>();
  request.plugin_dirs = plugin_dirs(vm);
  ql::core::Console console;
  ql::core::run_sweep(request, *command.registry, console);
  return kExitOk;
}

int command_report(const std::vector<std::string>& args) {
  po::options_description options("options");
  options.add_options()("help,h", "show this help");
  po::options_description hidden;
  hidden.add_options()("dir", po::value<std::string>());
  po::positional_options_description positional;
  positional.add("dir", 1);
  const po::variables_map vm = parse(args, options, hidden, positional);
  if (vm.count("help")) {
    std::cout << "usage: qlhost report DIR   (DIR: a results unit expNNNN or a sweep folder)\n\n" << options;
    return kExitOk;
  }
  if (!vm.count("dir")) throw ql::ConfigError("report: missing the unit or sweep folder (qlhost report DIR)");
  const ql::core::ReportFiles report = ql::core::write_report(vm["dir"].as<std::string>());
  fmt::print("{}\n", report.text);
  if (!report.summary.empty()) fmt::print("{}\n", report.summary);
  fmt::print("wrote {}", report.markdown.string());
  for (const fs::path& plot : report.plots) fmt::print(", {}", plot.filename().string());
  fmt::print("\n");
  return kExitOk;
}

int command_export(const std::vector<std::string>& args) {
  po::options_description options = common_options();
  options.add_options()("format", po::value<std::string>()->default_value("onnx"),
                        "onnx (result.onnx) or h5 (quantized.h5: the network with integer codes, in HDF5)")(
      "opset", po::value<int>()->default_value(13), "ONNX opset: 13 (int8 codes) or 21 (int4 where they fit)")(
      "fold", po::value<std::size_t>()->default_value(0), "the fold whose result to export")(
      "fold-batch-norm", "fold each batch norm into the convolution or linear layer before it")(
      "output", po::value<std::string>(), "the model file (default: UNIT/foldK/result.onnx)");
  po::options_description hidden;
  hidden.add_options()("unit", po::value<std::string>());
  po::positional_options_description positional;
  positional.add("unit", 1);
  const po::variables_map vm = parse(args, options, hidden, positional);
  if (vm.count("help")) {
    std::cout << "usage: qlhost export UNIT [--format onnx|h5] [--opset 13|21] [--fold-batch-norm] [--fold K] "
                 "[--output FILE]\n\n"
              << options;
    return kExitOk;
  }
  if (!vm.count("unit")) throw ql::ConfigError("export: missing the unit folder (qlhost export UNIT)");
  const std::string format = vm["format"].as<std::string>();
  if (format != "onnx" && format != "h5") throw ql::ConfigError(fmt::format("export: unknown format '{}' (onnx or h5)", format));
  const int opset = vm["opset"].as<int>();
  if (opset != 13 && opset != 21) throw ql::ConfigError(fmt::format("export: --opset {} (13 or 21)", opset));
  const auto opened = open_registry(vm);
  ql::core::PluginRegistry& registry = *opened;
  const bool h5 = format == "h5";
  const ql::core::UnitExportRequest request{vm["unit"].as<std::string>(),
                                            h5 ? ql::core::UnitExportFormat::h5 : ql::core::UnitExportFormat::onnx,
                                            vm["fold"].as<std::size_t>(),
                                            opset,
                                            vm.count("fold-batch-norm") > 0,
                                            vm.count("output") ? fs::path(vm["output"].as<std::string>()) : fs::path()};
  const fs::path written = ql::core::export_unit(request, registry);
  const auto megabytes = static_cast<double>(fs::file_size(written)) / 1e6;
  if (h5) fmt::print("wrote {} ({:.1f} MB)\n", written.string(), megabytes);
  else fmt::print("wrote {} (ONNX opset {}, {:.1f} MB)\n", written.string(), opset, megabytes);
  return kExitOk;
}

int command_experiments(const std::vector<std::string>& args) {
  po::options_description options("options");
  options.add_options()("help,h", "show this help")("logs", po::value<std::string>(),
                                                     "results root (default: $QL_LOGS, the per-user file, ./logs)");
  po::options_description hidden;
  hidden.add_options()("filter", po::value<std::string>());
  po::positional_options_description positional;
  positional.add("filter", 1);
  const po::variables_map vm = parse(args, options, hidden, positional);
  if (vm.count("help")) {
    std::cout << "usage: qlhost experiments [PROBLEM[/TOPOLOGY]] [--logs DIR]\n\n" << options;
    return kExitOk;
  }
  const fs::path logs = vm.count("logs") ? fs::path(vm["logs"].as<std::string>()) : ql::core::default_storage().logs;
  const std::string filter = vm.count("filter") ? vm["filter"].as<std::string>() : "";
  const std::string problem_filter = filter.substr(0, filter.find('/'));
  const std::string topology_filter = filter.find('/') == std::string::npos ? "" : filter.substr(filter.find('/') + 1);
  std::vector<std::vector<std::string>> rows;
  std::error_code error;
  std::vector<fs::path> problems, topologies;
  for (const auto& p : fs::directory_iterator(logs, error)) {
    if (p.is_directory() && (problem_filter.empty() || p.path().filename() == problem_filter)) problems.push_back(p);
  }
  std::sort(problems.begin(), problems.end());
  for (const fs::path& problem : problems) {
    std::vector<fs::path> topology_dirs;
    for (const auto& t : fs::directory_iterator(problem, error)) {
      if (t.is_directory() && (topology_filter.empty() || t.path().filename() == topology_filter)) {
        topology_dirs.push_back(t);
      }
    }
    std::sort(topology_dirs.begin(), topology_dirs.end());
    for (const fs::path& topology : topology_dirs) {
      std::string previous_config;
      for (const fs::path& unit : ql::core::list_units(topology)) {
        std::vector<std::string> row{fmt::format("{}/{}/{}", problem.filename().string(),
                                                 topology.filename().string(), unit.filename().string())};
        std::string config;
        try {
          const ql::core::UnitRecord r = ql::core::read_unit_record(unit);
          config = ql::core::read_text_file(unit / "config.toml");
          std::int64_t epochs = 0;
          for (const auto& f : r.folds) epochs += f.epochs_done;
          const auto& f0 = r.folds.empty() ? ql::core::FoldRecord{} : r.folds[0];
          std::string difference = "-";
          if (!previous_config.empty()) {
            std::vector<std::string> changes;
            for (const std::string& d : ql::core::config_differences(previous_config, config)) {
              if (d.rfind("storage.", 0) != 0) changes.push_back(d);
            }
            difference = changes.empty() ? "same" : fmt::format("{}", fmt::join(changes.begin(),
                changes.begin() + static_cast<std::ptrdiff_t>(std::min<std::size_t>(3, changes.size())), "; "));
            if (changes.size() > 3) difference += fmt::format(" (+{})", changes.size() - 3);
          }
          row.insert(row.end(), {r.live_status(), r.started,
                                 fmt::format("{}/{}", epochs, r.epochs * static_cast<std::int64_t>(r.folds.size())),
                                 f0.best_metric == "valid/top1" ? ql::core::percent(f0.best_value) : "-",
                                 ql::core::percent(f0.trained_top1), ql::core::percent(f0.result_top1), difference});
        } catch (const std::exception& e) {
          row.insert(row.end(), {"unreadable", "-", "-", "-", "-", "-", ql::core::one_line(ql::message_of(e))});
        }
        if (!config.empty()) previous_config = config;
        rows.push_back(std::move(row));
      }
    }
  }
  if (rows.empty()) {
    fmt::print("no results units under {}\n", logs.string());
    return kExitOk;
  }
  fmt::print("results under {}\n{}", logs.string(),
             ql::core::markdown_table({"unit", "status", "started", "epochs", "best valid", "test (trained)",
                                       "test (result)", "config vs previous unit"},
                                      rows));
  return kExitOk;
}

int command_summary(const std::vector<std::string>& args) {
  ExperimentCommand command = parse_experiment_command("summary", args);
  if (command.experiment.empty()) return kExitOk;
  auto& registry = *command.registry;
  const auto config = ql::core::ExperimentConfig::load(command.experiment, command.overrides, registry);
  const auto storage = ql::core::resolve_storage(config.section("storage"), command.experiment);
  auto problem = registry.create<ql::Problem>(config.problem().name, config.problem().options.with_base_dir(storage.data));
  auto topology = registry.create<ql::Topology>(config.topology().name, config.topology().options);
  const ql::DatasetSpec spec = problem->spec();
  auto network = topology->build(spec);
  fmt::print("topology {} for problem {}:\n{}", config.topology().name, config.problem().name,
             ql::core::summarize_network(*network, spec));
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  return ql::core::run_tool("qlhost", kUsage, argc, argv,
                            {{"run", command_run},
                             {"sweep", command_sweep},
                             {"report", command_report},
                             {"experiments", command_experiments},
                             {"summary", command_summary},
                             {"export", command_export},
                             {"plugins", command_plugins}});
}
