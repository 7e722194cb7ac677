#include "quantlab/core/unit_record.hpp"

#include "toml_file.hpp"
#include "quantlab/core/experiment_store.hpp"
#include "quantlab/core/process.hpp"
#include "quantlab/sdk/error.hpp"

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <toml++/toml.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <sstream>
#include <unistd.h>

namespace ql::core {

namespace fs = std::filesystem;

namespace {

constexpr char kFile[] = "unit.toml";

template <typename T>
T value_or(const toml::node_view<const toml::node>& node, T fallback) {
  return node.value<T>().value_or(fallback);
}

}  // namespace

std::string local_time_now() {
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}", fmt::localtime(std::chrono::system_clock::to_time_t(
                                                 std::chrono::system_clock::now())));
}

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "localhost";
  return name;
}

std::string git_revision_of(const fs::path& path) {
  const fs::path dir = fs::is_directory(path) ? path : fs::absolute(path).parent_path();
  auto [code, out] = capture_output({"git", "-C", dir.string(), "rev-parse", "HEAD"});
  if (code != 0) return "";
  std::string revision = out.substr(0, out.find('\n'));
  auto [status_code, changes] = capture_output({"git", "-C", dir.string(), "status", "--porcelain", "-uno"});
  if (status_code == 0 && !changes.empty()) revision += "+dirty";
  return revision;
}

std::string UnitRecord::live_status() const {
  if (status != "running" || host != host_name() || pid <= 0) return status;
  const bool alive = ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
  return alive ? status : "killed";
}

void write_unit_record(const fs::path& unit, const UnitRecord& r) {
  toml::table root{{"status", r.status},
                   {"message", r.message},
                   {"experiment", r.experiment},
                   {"problem", r.problem},
                   {"topology", r.topology},
                   {"started", r.started},
                   {"ended", r.ended},
                   {"pid", r.pid},
                   {"host", r.host},
                   {"resumes", r.resumes},
                   {"epochs", r.epochs},
                   {"quantlab_version", r.quantlab_version},
                   {"fingerprint", r.fingerprint},
                   {"git_revision", r.git_revision},
                   {"weights", r.weights},
                   {"weights_sha256", r.weights_sha256}};
  toml::array plugins;
  for (const PluginRecord& p : r.plugins) {
    plugins.push_back(toml::table{{"kind", p.kind}, {"name", p.name}, {"version", p.version},
                                  {"fingerprint", p.fingerprint}, {"file", p.file}});
  }
  root.insert("plugin", std::move(plugins));
  toml::array folds;
  for (const FoldRecord& f : r.folds) {
    folds.push_back(toml::table{{"status", f.status},
                                {"epochs_done", f.epochs_done},
                                {"steps", f.steps},
                                {"best_metric", f.best_metric},
                                {"best_value", f.best_value},
                                {"best_epoch", f.best_epoch},
                                {"trained_top1", f.trained_top1},
                                {"trained_loss", f.trained_loss},
                                {"result_top1", f.result_top1},
                                {"result_loss", f.result_loss}});
  }
  root.insert("fold", std::move(folds));
  std::ostringstream text;
  text << "# what this results unit is and how far it got (written by qlhost)\n" << root << '\n';
  write_file_atomically(unit / kFile, text.str());
}

UnitRecord read_unit_record(const fs::path& unit) {
  const fs::path file = unit / kFile;
  QL_CHECK(fs::is_regular_file(file), "{}: no such file (not a QuantLab results unit?)", file.string());
  const toml::table root = read_toml_file(file);
  const toml::table& t = root;
  UnitRecord r;
  r.status = value_or<std::string>(t["status"], "unknown");
  r.message = value_or<std::string>(t["message"], "");
  r.experiment = value_or<std::string>(t["experiment"], "");
  r.problem = value_or<std::string>(t["problem"], "");
  r.topology = value_or<std::string>(t["topology"], "");
  r.started = value_or<std::string>(t["started"], "");
  r.ended = value_or<std::string>(t["ended"], "");
  r.pid = value_or<std::int64_t>(t["pid"], 0);
  r.host = value_or<std::string>(t["host"], "");
  r.resumes = value_or<std::int64_t>(t["resumes"], 0);
  r.epochs = value_or<std::int64_t>(t["epochs"], 0);
  r.quantlab_version = value_or<std::string>(t["quantlab_version"], "");
  r.fingerprint = value_or<std::string>(t["fingerprint"], "");
  r.git_revision = value_or<std::string>(t["git_revision"], "");
  r.weights = value_or<std::string>(t["weights"], "");
  r.weights_sha256 = value_or<std::string>(t["weights_sha256"], "");
  if (const toml::array* plugins = t["plugin"].as_array()) {
    for (const toml::node& node : *plugins) {
      const toml::node_view<const toml::node> p(node);
      r.plugins.push_back({value_or<std::string>(p["kind"], ""), value_or<std::string>(p["name"], ""),
                           value_or<std::string>(p["version"], ""), value_or<std::string>(p["fingerprint"], ""),
                           value_or<std::string>(p["file"], "")});
    }
  }
  if (const toml::array* folds = t["fold"].as_array()) {
    for (const toml::node& node : *folds) {
      const toml::node_view<const toml::node> f(node);
      FoldRecord fold;
      fold.status = value_or<std::string>(f["status"], "pending");
      fold.epochs_done = value_or<std::int64_t>(f["epochs_done"], 0);
      fold.steps = value_or<std::int64_t>(f["steps"], 0);
      fold.best_metric = value_or<std::string>(f["best_metric"], "");
      fold.best_value = value_or<double>(f["best_value"], 0.0);
      fold.best_epoch = value_or<std::int64_t>(f["best_epoch"], 0);
      fold.trained_top1 = value_or<double>(f["trained_top1"], -1.0);
      fold.trained_loss = value_or<double>(f["trained_loss"], -1.0);
      fold.result_top1 = value_or<double>(f["result_top1"], -1.0);
      fold.result_loss = value_or<double>(f["result_loss"], -1.0);
      r.folds.push_back(fold);
    }
  }
  return r;
}

}  // namespace ql::core
