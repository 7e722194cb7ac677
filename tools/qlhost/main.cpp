// qlhost: the command line. Parses options, calls core, and is the one place where errors
// are caught and turned into one line and an exit code (0 ok, 1 failure, 2 bad usage/config).
#include "quantlab/core/cli.hpp"
#include "quantlab/core/experiment_config.hpp"
#include "quantlab/core/experiment_runner.hpp"
#include "quantlab/core/network_summary.hpp"
#include "quantlab/core/plugin_registry.hpp"
#include "quantlab/sdk/error.hpp"

#include <boost/program_options.hpp>
#include <fmt/format.h>

#include <cstdio>
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
  run EXP.toml [--set KEY=VALUE ...]   train and evaluate the experiment EXP.toml
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

void report_refusals(const ql::core::PluginRegistry& registry, bool verbose) {
  for (const std::string& line : registry.refusals()) fmt::print(stderr, "warning: {}\n", line);
  if (verbose) {
    for (const std::string& line : registry.skipped()) fmt::print(stderr, "skipped: {}\n", line);
  }
}

int command_plugins(const std::vector<std::string>& args) {
  po::options_description options = common_options();
  options.add_options()("show", po::value<std::string>(), "print NAME's options, defaults and documentation");
  const po::variables_map vm = parse(args, options);
  if (vm.count("help")) {
    std::cout << "usage: qlhost plugins [--show NAME] [--plugin-dir DIR ...] [--verbose]\n\n" << options;
    return kExitOk;
  }
  ql::core::PluginRegistry registry(ql::core::default_search_path(as_paths(plugin_dirs(vm))));
  report_refusals(registry, vm.count("verbose") > 0);
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

ExperimentCommand parse_experiment_command(const std::string& name, const std::vector<std::string>& args) {
  po::options_description options = common_options();
  options.add_options()("set", po::value<std::vector<std::string>>()->composing(),
                        "override a value of the experiment file, e.g. training.epochs=3; repeatable");
  po::options_description hidden;
  hidden.add_options()("experiment", po::value<std::string>());
  po::positional_options_description positional;
  positional.add("experiment", 1);
  const po::variables_map vm = parse(args, options, hidden, positional);
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
  command.registry = std::make_unique<ql::core::PluginRegistry>(
      ql::core::default_search_path(as_paths(plugin_dirs(vm))));
  report_refusals(*command.registry, vm.count("verbose") > 0);
  return command;
}

int command_run(const std::vector<std::string>& args) {
  ExperimentCommand command = parse_experiment_command("run", args);
  if (command.experiment.empty()) return kExitOk;
  ql::core::Console console;
  ql::core::run_experiment({command.experiment, command.overrides}, *command.registry, console);
  return kExitOk;
}

int command_summary(const std::vector<std::string>& args) {
  ExperimentCommand command = parse_experiment_command("summary", args);
  if (command.experiment.empty()) return kExitOk;
  auto& registry = *command.registry;
  const auto config = ql::core::ExperimentConfig::load(command.experiment, command.overrides, registry);
  auto problem = registry.create<ql::Problem>(config.problem().name, config.problem().options);
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
                            {{"run", command_run}, {"summary", command_summary}, {"plugins", command_plugins}});
}
