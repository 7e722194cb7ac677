#include "quantlab/core/sweep.hpp"

#include "quantlab/core/experiment_config.hpp"
#include "quantlab/core/experiment_store.hpp"
#include "quantlab/core/process.hpp"
#include "quantlab/core/report.hpp"
#include "quantlab/core/storage.hpp"
#include "quantlab/core/unit_record.hpp"
#include "quantlab/sdk/error.hpp"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <map>
#include <sstream>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>

namespace ql::core {

namespace fs = std::filesystem;

namespace {

std::string shell_quoted(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

struct SweepRun {
  std::vector<std::string> overrides;  // the grid's assignments of this run
  fs::path unit;
  int exit_code = -1;                  // -1: not run (yet)
};

void write_sweep_file(const fs::path& dir, const SweepRequest& request, const std::vector<SweepRun>& runs) {
  toml::table root{{"experiment", fs::absolute(request.experiment).string()}, {"launcher", request.launcher},
                   {"created", local_time_now()}};
  toml::array grids, common;
  for (const std::string& grid : request.grids) grids.push_back(grid);
  for (const std::string& set : request.overrides) common.push_back(set);
  root.insert("grid", std::move(grids));
  root.insert("set", std::move(common));
  toml::array list;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    toml::array overrides;
    for (const std::string& o : runs[i].overrides) overrides.push_back(o);
    list.push_back(toml::table{{"index", static_cast<std::int64_t>(i)},
                               {"overrides", std::move(overrides)},
                               {"unit", runs[i].unit.string()},
                               {"exit_code", runs[i].exit_code}});
  }
  root.insert("run", std::move(list));
  std::ostringstream text;
  text << "# a QuantLab sweep: one unit per run (written by qlhost sweep)\n" << root << '\n';
  write_file_atomically(dir / "sweep.toml", text.str());
}

std::vector<std::string> unit_arguments(const SweepRequest& request, const SweepRun& run, const fs::path& dir,
                                        std::size_t index, int threads) {
  std::vector<std::string> args{current_executable().string(), "run", fs::absolute(request.experiment).string()};
  for (const std::string& set : request.overrides) args.insert(args.end(), {"--set", set});
  for (const std::string& set : run.overrides) args.insert(args.end(), {"--set", set});
  if (threads > 0) args.insert(args.end(), {"--set", fmt::format("run.threads={}", threads)});
  for (const std::string& plugin_dir : request.plugin_dirs) args.insert(args.end(), {"--plugin-dir", plugin_dir});
  args.insert(args.end(), {"--unit-file", (dir / "runs" / fmt::format("{}.unit", index)).string()});
  return args;
}

fs::path unit_written_to(const fs::path& file) {
  std::error_code error;
  if (!fs::exists(file, error)) return {};
  const std::string text = read_text_file(file);
  return text.substr(0, text.find('\n'));
}

void write_slurm_script(const fs::path& dir, const SweepRequest& request, const std::vector<SweepRun>& runs) {
  std::string cases;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    std::vector<std::string> args = unit_arguments(request, runs[i], dir, i, 0);
    for (std::string& arg : args) arg = shell_quoted(arg);
    cases += fmt::format("  {}) exec {} ;;\n", i, fmt::join(args, " "));
  }
  const std::string script = fmt::format(
      "#!/bin/bash\n"
      "# Slurm job array of QuantLab sweep {}: one array task per unit.\n"
      "# Submit with: sbatch {}\n"
      "#SBATCH --job-name=quantlab-{}\n"
      "#SBATCH --array=0-{}\n"
      "#SBATCH --output={}/runs/%a.log\n"
      "#SBATCH --ntasks=1\n"
      "set -euo pipefail\n"
      "case \"$SLURM_ARRAY_TASK_ID\" in\n{}"
      "  *) echo \"unknown array task $SLURM_ARRAY_TASK_ID\" >&2; exit 2 ;;\n"
      "esac\n",
      dir.filename().string(), (dir / "sweep.sbatch").string(), dir.filename().string(), runs.size() - 1,
      dir.string(), cases);
  write_file_atomically(dir / "sweep.sbatch", script);
  ::chmod((dir / "sweep.sbatch").c_str(), 0755);
}

}  // namespace

std::vector<std::vector<std::string>> grid_combinations(const std::vector<std::string>& grids) {
  std::vector<std::vector<std::string>> combinations{{}};
  for (const std::string& grid : grids) {
    const std::size_t equals = grid.find('=');
    if (equals == std::string::npos || equals == 0) {
      throw ConfigError(fmt::format("--grid {}: expected KEY=[VALUE, ...]", grid));
    }
    const std::string key = grid.substr(0, equals);
    toml::table parsed;
    try {
      parsed = toml::parse("values = " + grid.substr(equals + 1));
    } catch (const toml::parse_error& e) {
      throw ConfigError(fmt::format("--grid {}: {} (expected KEY=[VALUE, ...])", grid, e.description()));
    }
    const toml::array* values = parsed["values"].as_array();
    if (!values || values->empty()) {
      throw ConfigError(fmt::format("--grid {}: expected a non-empty array of values", grid));
    }
    std::vector<std::vector<std::string>> next;
    for (const auto& combination : combinations) {
      for (const toml::node& value : *values) {
        std::ostringstream text;
        value.visit([&](const auto& v) { text << v; });
        auto extended = combination;
        extended.push_back(fmt::format("{}={}", key, text.str()));
        next.push_back(std::move(extended));
      }
    }
    combinations = std::move(next);
  }
  return combinations;
}

fs::path run_sweep(const SweepRequest& request, PluginRegistry& registry, Console& console) {
  QL_CHECK(request.launcher == "local" || request.launcher == "slurm",
           "--launcher {}: expected local or slurm", request.launcher);
  if (request.jobs < 1) throw ConfigError(fmt::format("--jobs {}: expected at least 1", request.jobs));
  const auto combinations = grid_combinations(request.grids);
  std::vector<SweepRun> runs;
  std::string problem, topology;
  fs::path logs;
  bool threads_set = false;
  for (const auto& combination : combinations) {
    std::vector<std::string> overrides = request.overrides;
    overrides.insert(overrides.end(), combination.begin(), combination.end());
    const ExperimentConfig config = ExperimentConfig::load(request.experiment, overrides, registry);
    problem = config.problem().name;
    topology = config.topology().name;
    logs = resolve_storage(config.section("storage"), request.experiment).logs;
    threads_set = config.section("run").get_int("threads") > 0;
    runs.push_back({combination, {}, -1});
  }
  const fs::path dir = allocate_numbered(logs / problem / topology, "sweep");
  fs::create_directories(dir / "runs");
  write_sweep_file(dir, request, runs);
  console.info(fmt::format("sweep of {} units -> {}", runs.size(), dir.string()));

  if (request.launcher == "slurm") {
    write_slurm_script(dir, request, runs);
    console.info(fmt::format("wrote {}; submit it with: sbatch {}", (dir / "sweep.sbatch").string(),
                             (dir / "sweep.sbatch").string()));
    return dir;
  }

  // Each unit gets its share of the cores unless the experiment fixes run.threads.
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int threads = threads_set ? 0 : std::max(1, cores / request.jobs);
  std::map<pid_t, std::size_t> running;
  std::size_t next = 0, failed = 0;
  while (next < runs.size() || !running.empty()) {
    while (next < runs.size() && static_cast<int>(running.size()) < request.jobs) {
      const fs::path log = dir / "runs" / fmt::format("{}.log", next);
      running[spawn(unit_arguments(request, runs[next], dir, next, threads), log)] = next;
      console.info(fmt::format("unit {}/{} started: {} (log {})", next + 1, runs.size(),
                               fmt::join(runs[next].overrides, " "), log.string()));
      ++next;
    }
    int status = 0;
    const pid_t done = ::waitpid(-1, &status, 0);
    if (done < 0) continue;
    const auto found = running.find(done);
    if (found == running.end()) continue;
    SweepRun& run = runs[found->second];
    run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    run.unit = unit_written_to(dir / "runs" / fmt::format("{}.unit", found->second));
    if (run.exit_code != 0) ++failed;
    console.info(fmt::format("unit {}/{} {} (exit {}): {}", found->second + 1, runs.size(),
                             run.exit_code == 0 ? "done" : "FAILED", run.exit_code,
                             run.unit.empty() ? "no unit" : run.unit.string()));
    running.erase(found);
    write_sweep_file(dir, request, runs);
  }
  const ReportFiles report = write_report(dir);
  console.info(report.text);
  QL_CHECK(failed == 0, "{} of {} units of the sweep failed; see {}/runs/*.log", failed, runs.size(), dir.string());
  return dir;
}

}  // namespace ql::core
