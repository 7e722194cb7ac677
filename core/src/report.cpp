#include "quantlab/core/report.hpp"

#include "toml_file.hpp"
#include "quantlab/core/experiment_store.hpp"
#include "quantlab/core/metrics_log.hpp"
#include "quantlab/core/unit_record.hpp"
#include "quantlab/sdk/error.hpp"

#include <fmt/format.h>
#include <plstream.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>

namespace ql::core {

namespace fs = std::filesystem;

namespace {

struct Series {
  std::string name;
  std::vector<double> x, y;
};

// One PNG line chart through PLplot's cairo driver: white background, legend right of the plot.
void line_chart(const fs::path& file, const std::string& title, const std::string& x_label,
                const std::string& y_label, const std::vector<Series>& series, bool log_y = false) {
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  std::vector<Series> shown;
  for (Series s : series) {
    if (s.x.empty()) continue;
    if (log_y) {
      for (double& v : s.y) v = std::log10(std::max(v, 1e-12));
    }
    x0 = std::min(x0, *std::min_element(s.x.begin(), s.x.end()));
    x1 = std::max(x1, *std::max_element(s.x.begin(), s.x.end()));
    y0 = std::min(y0, *std::min_element(s.y.begin(), s.y.end()));
    y1 = std::max(y1, *std::max_element(s.y.begin(), s.y.end()));
    shown.push_back(std::move(s));
  }
  if (shown.empty()) return;
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y1 = y0 + (y0 == 0 ? 1 : std::abs(y0) * 0.1);
  const double pad = 0.05 * (y1 - y0);

  plstream pls;
  pls.sdev("pngcairo");
  pls.sfnam(file.c_str());
  pls.spage(0, 0, 900, 600, 0, 0);
  // Colour map 0: white background, black axes, then the line colours.
  const std::vector<PLINT> r{255, 0, 31, 255, 44, 214, 148, 140, 227, 127, 188, 23};
  const std::vector<PLINT> g{255, 0, 119, 127, 160, 39, 103, 86, 119, 127, 189, 190};
  const std::vector<PLINT> b{255, 0, 180, 14, 44, 40, 189, 75, 194, 127, 34, 207};
  pls.scmap0(r.data(), g.data(), b.data(), static_cast<PLINT>(r.size()));
  pls.init();
  pls.col0(1);
  pls.adv(0);
  // The plot on the left three quarters, the legend outside it on the right.
  pls.vpor(0.1, 0.7, 0.12, 0.9);
  pls.wind(x0, x1, y0 - pad, y1 + pad);
  const bool integer_x = std::all_of(shown.begin(), shown.end(), [](const Series& s) {
    return std::all_of(s.x.begin(), s.x.end(), [](double v) { return v == std::floor(v); });
  });
  pls.box("bcgnst", integer_x && x1 - x0 <= 12 ? 1.0 : 0.0, 0, log_y ? "bcglnstv" : "bcgnstv", 0.0, 0);
  pls.lab(x_label.c_str(), y_label.c_str(), title.c_str());
  std::vector<PLINT> options, colours, styles;
  std::vector<PLFLT> widths;
  std::vector<const char*> names;
  for (std::size_t i = 0; i < shown.size(); ++i) {
    const PLINT colour = 2 + static_cast<PLINT>(i % (r.size() - 2));
    pls.col0(colour);
    pls.width(2.0);
    pls.line(static_cast<PLINT>(shown[i].x.size()), shown[i].x.data(), shown[i].y.data());
    if (shown[i].x.size() <= 40) {
      pls.poin(static_cast<PLINT>(shown[i].x.size()), shown[i].x.data(), shown[i].y.data(), 17);
    }
    options.push_back(PL_LEGEND_LINE);
    colours.push_back(colour);
    styles.push_back(1);
    widths.push_back(2.0);
    names.push_back(shown[i].name.c_str());
  }
  pls.col0(1);
  pls.width(1.0);
  PLFLT legend_width = 0, legend_height = 0;
  const std::vector<PLINT> text_colours(names.size(), 1);
  pls.legend(&legend_width, &legend_height, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX,
             PL_POSITION_RIGHT | PL_POSITION_OUTSIDE, 0.02, 0.0, 0.05, 0, 1, 1, 0, 0,
             static_cast<PLINT>(names.size()), options.data(), 1.0, 0.8, 2.0, 0.0, text_colours.data(), names.data(),
             nullptr, nullptr, nullptr, nullptr, colours.data(), styles.data(), widths.data(), nullptr, nullptr,
             nullptr, nullptr);
}


struct CsvTable {
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> rows;
  int column(const std::string& name) const {
    const auto found = std::find(columns.begin(), columns.end(), name);
    return found == columns.end() ? -1 : static_cast<int>(found - columns.begin());
  }
};

CsvTable read_csv(const fs::path& file) {
  std::istringstream in(read_text_file(file));
  CsvTable table;
  std::string line;
  if (std::getline(in, line)) table.columns = split_csv_line(line);
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    table.rows.push_back(split_csv_line(line));
    QL_CHECK(table.rows.back().size() == table.columns.size(), "{}: a row has {} cells, the header {}",
             file.string(), table.rows.back().size(), table.columns.size());
  }
  return table;
}

double number(const std::string& cell) {
  try {
    return std::stod(cell);
  } catch (const std::exception&) {
    return NAN;
  }
}

// x = the epoch of each point (the "epoch" series logged at the same steps).
Series epoch_series(const MetricsData& metrics, const std::string& name, const std::string& label) {
  Series s{label, {}, {}};
  const auto found = metrics.scalars.find(name);
  const auto epochs = metrics.scalars.find("epoch");
  if (found == metrics.scalars.end() || epochs == metrics.scalars.end()) return s;
  std::map<std::int64_t, double> epoch_at;
  for (const ScalarPoint& p : epochs->second) epoch_at[p.step] = p.value;
  for (const ScalarPoint& p : found->second) {
    const auto e = epoch_at.find(p.step);
    if (e == epoch_at.end()) continue;
    s.x.push_back(e->second);
    s.y.push_back(p.value);
  }
  return s;
}

struct Report {
  std::string markdown;
  std::string text;
  std::vector<fs::path> plots;
};

void add_table(Report& report, const std::string& heading, const std::vector<std::string>& columns,
               const std::vector<std::vector<std::string>>& rows) {
  const std::string table = markdown_table(columns, rows);
  report.markdown += fmt::format("\n## {}\n\n{}", heading, table);
  report.text += fmt::format("\n{}\n{}", heading, table);
}

void add_plot(Report& report, const fs::path& dir, const std::string& name, const std::string& caption) {
  if (!fs::exists(dir / name)) return;
  report.plots.push_back(dir / name);
  report.markdown += fmt::format("\n![{}]({})\n", caption, name);
}

// A CSV of (variant, layer, error) rows as a log-scale plot (one line per variant) and a table
// (one column per variant).
void layer_error_section(Report& report, const fs::path& unit, const fs::path& file, const std::string& plot,
                         const std::string& title, const std::string& y_label, const std::string& heading) {
  if (!fs::exists(file)) return;
  const CsvTable errors = read_csv(file);
  if (errors.columns.size() < 3) return;
  std::map<std::string, Series> per_variant;
  std::vector<std::string> order;
  std::vector<std::string> layers;
  for (const auto& row : errors.rows) {
    if (!per_variant.count(row[0])) order.push_back(row[0]);
    Series& s = per_variant[row[0]];
    s.x.push_back(static_cast<double>(s.x.size()));
    s.y.push_back(number(row[2]));
    if (s.x.size() > layers.size()) layers.push_back(row[1]);
  }
  std::vector<Series> series;
  for (const std::string& label : order) {
    Series s = per_variant[label];
    s.name = label;
    series.push_back(s);
  }
  line_chart(unit / plot, title, "layer (network order)", y_label, series, /*log_y=*/true);
  add_plot(report, unit, plot, title);
  std::vector<std::vector<std::string>> rows;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    std::vector<std::string> row{std::to_string(i), layers[i]};
    for (const std::string& label : order) {
      const Series& s = per_variant[label];
      row.push_back(i < s.y.size() ? fmt::format("{:.4g}", s.y[i]) : "-");
    }
    rows.push_back(std::move(row));
  }
  std::vector<std::string> columns{"#", "layer"};
  columns.insert(columns.end(), order.begin(), order.end());
  add_table(report, heading, columns, rows);
}

void variants_section(Report& report, const fs::path& unit, const fs::path& fold) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(fold)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > 13 && name.compare(name.size() - 13, 13, "_variants.csv") == 0) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  for (const fs::path& file : files) {
    const std::string name = file.filename().string();
    const std::string algorithm = name.substr(0, name.size() - 13);
    const CsvTable table = read_csv(file);
    add_table(report, fmt::format("Variants of `{}` (test split)", algorithm), table.columns, table.rows);

    // Parameters are the columns between "variant" and "loss"; x is the last, lines the others.
    // y is the top-1 in %, or for a regression (no top-1) the loss ratio to the float network.
    const int loss = table.column("loss");
    const bool regression = table.column("top1") < 0;
    const int measure = table.column(regression ? "loss_ratio" : "top1");
    const double scale = regression ? 1.0 : 100.0;
    if (loss < 2 || measure < 0 || table.rows.size() < 2) continue;
    const std::string x_name = table.columns[static_cast<std::size_t>(loss - 1)];
    std::map<std::string, Series> lines;
    double float_level = NAN;
    for (const auto& row : table.rows) {
      if (row[0] == "float") {
        float_level = regression ? 1.0 : number(row[static_cast<std::size_t>(measure)]);
        continue;
      }
      std::vector<std::string> group;
      for (int c = 1; c < loss - 1; ++c) {
        const double value = number(row[c]);
        const std::string shown = std::isnan(value) ? row[c] : fmt::format("{:.3g}", value);
        group.push_back(table.columns[c] == "series" ? row[c] : fmt::format("{}={}", table.columns[c], shown));
      }
      Series& s = lines[group.empty() ? algorithm : fmt::format("{}", fmt::join(group, " "))];
      s.x.push_back(number(row[static_cast<std::size_t>(loss - 1)]));
      s.y.push_back(scale * number(row[static_cast<std::size_t>(measure)]));
    }
    std::vector<Series> series;
    for (auto& [label, s] : lines) {
      s.name = label;
      series.push_back(s);
    }
    if (!std::isnan(float_level) && !series.empty()) {
      Series reference{"float", {}, {}};
      for (const Series& s : series) reference.x.insert(reference.x.end(), s.x.begin(), s.x.end());
      std::sort(reference.x.begin(), reference.x.end());
      reference.x = {reference.x.front(), reference.x.back()};
      reference.y = {scale * float_level, scale * float_level};
      series.push_back(reference);
    }
    const std::string plot = algorithm + "_accuracy.png";
    line_chart(unit / plot, fmt::format("{}: test {} vs {}", algorithm, regression ? "loss ratio" : "accuracy", x_name),
               x_name, regression ? "loss / float loss" : "top-1 (%)", series);
    add_plot(report, unit, plot, fmt::format("{} accuracy vs {}", algorithm, x_name));

    layer_error_section(report, unit, fold / (algorithm + "_layer_error.csv"), algorithm + "_layer_error.png",
                        fmt::format("{}: per-layer relative weight change", algorithm), "||W_q - W|| / ||W||",
                        fmt::format("Per-layer relative weight change of `{}`", algorithm));
  }
}

// Every table a plugin wrote through its Context (fold/<plugin>/tables/<name>.csv), whatever
// its name: a (variant, layer, value) table as a per-layer plot and a table of layers, any
// other as it is (its first rows).
void plugin_tables_section(Report& report, const fs::path& unit, const fs::path& fold) {
  constexpr std::size_t kRowsShown = 50;
  std::vector<fs::path> files;
  for (const auto& plugin : fs::directory_iterator(fold)) {
    if (!plugin.is_directory() || !fs::is_directory(plugin.path() / "tables")) continue;
    for (const auto& entry : fs::directory_iterator(plugin.path() / "tables")) {
      if (entry.path().extension() == ".csv") files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  for (const fs::path& file : files) {
    const std::string plugin = file.parent_path().parent_path().filename().string();
    const std::string name = file.stem().string();
    const CsvTable table = read_csv(file);
    if (table.columns.size() == 3 && table.columns[1] == "layer") {
      layer_error_section(report, unit, file, fmt::format("{}_{}.png", plugin, name),
                          fmt::format("{}: {} per layer", plugin, name), table.columns[2],
                          fmt::format("`{}` table `{}` ({} per layer)", plugin, name, table.columns[2]));
      continue;
    }
    std::vector<std::vector<std::string>> rows(table.rows.begin(),
                                               table.rows.begin() + std::min(table.rows.size(), kRowsShown));
    add_table(report, fmt::format("`{}` table `{}`{}", plugin, name,
                                  table.rows.size() > kRowsShown ? fmt::format(" (first {} of {} rows)", kRowsShown, table.rows.size()) : ""),
              table.columns, rows);
  }
}

// A sample's mean ± standard deviation (n - 1), as "12.34 ± 0.56" of `scale` x the values.
std::string mean_sd(const std::vector<double>& v, double scale, int digits) {
  if (v.empty()) return "-";
  const double mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  double squares = 0;
  for (double x : v) squares += (x - mean) * (x - mean);
  const double sd = v.size() > 1 ? std::sqrt(squares / static_cast<double>(v.size() - 1)) : 0.0;
  return fmt::format("{:.{}f} ± {:.{}f}", scale * mean, digits, scale * sd, digits);
}

// A loss as the tables print it, "-" when not measured.
std::string loss_text(double loss) { return loss < 0 ? "-" : fmt::format("{:.4f}", loss); }

ReportFiles unit_report(const fs::path& unit) {
  const UnitRecord record = read_unit_record(unit);
  Report report;
  report.markdown = fmt::format(
      "# {} — {} / {}\n\nexperiment `{}`, status **{}**, started {}, ended {}{}\n\n"
      "QuantLab {} ({}), experiment git revision `{}`\n",
      unit.filename().string(), record.problem, record.topology, record.experiment, record.live_status(),
      record.started, record.ended.empty() ? "-" : record.ended,
      record.resumes > 0 ? fmt::format(", resumed {} time(s)", record.resumes) : "", record.quantlab_version,
      record.fingerprint, record.git_revision.empty() ? "none" : record.git_revision);

  std::vector<std::vector<std::string>> rows;
  std::vector<double> trained, result;
  for (std::size_t k = 0; k < record.folds.size(); ++k) {
    const FoldRecord& f = record.folds[k];
    const bool higher = f.best_metric == "valid/top1";
    rows.push_back({std::to_string(k), f.status, fmt::format("{}/{}", f.epochs_done, record.epochs),
                    f.best_metric.empty() ? "-" : f.best_metric,
                    f.best_metric.empty() ? "-" : (higher ? percent(f.best_value) : fmt::format("{:.4f}", f.best_value)),
                    std::to_string(f.best_epoch), percent(f.trained_top1), percent(f.result_top1),
                    loss_text(f.trained_loss), loss_text(f.result_loss)});
    if (f.trained_top1 >= 0) trained.push_back(f.trained_top1);
    if (f.result_top1 >= 0) result.push_back(f.result_top1);
  }
  auto mean_std = [](const std::vector<double>& v) { return v.empty() ? std::string("-") : mean_sd(v, 100.0, 2) + " %"; };
  std::string summary;
  if (record.folds.size() > 1) {
    rows.push_back({"mean ± std", "", "", "", "", "", mean_std(trained), mean_std(result), "", ""});
    summary = fmt::format("{} folds: trained test top-1 {}, result {}", record.folds.size(), mean_std(trained),
                          mean_std(result));
  } else if (!record.folds.empty() && record.folds[0].trained_top1 < 0) {  // regression: no top-1
    summary = fmt::format("trained test loss {}, result {}", loss_text(record.folds[0].trained_loss),
                          loss_text(record.folds[0].result_loss));
  } else if (!record.folds.empty()) {
    summary = fmt::format("trained test top-1 {}, result {}", percent(record.folds[0].trained_top1),
                          percent(record.folds[0].result_top1));
  }
  add_table(report, "Results", {"fold", "status", "epochs", "best on", "best", "at epoch", "test top-1 (trained)",
                                "test top-1 (result)", "test loss (trained)", "test loss (result)"},
            rows);

  std::vector<Series> losses, accuracies;
  for (std::size_t k = 0; k < record.folds.size(); ++k) {
    const fs::path file = unit / fmt::format("fold{}", k) / "metrics.h5";
    if (!fs::exists(file)) continue;
    const MetricsData metrics = read_metrics_h5(file);
    const std::string prefix = record.folds.size() > 1 ? fmt::format("fold {} ", k) : "";
    losses.push_back(epoch_series(metrics, "train/loss", prefix + "train"));
    losses.push_back(epoch_series(metrics, "valid/loss", prefix + "valid"));
    Series train = epoch_series(metrics, "train/top1", prefix + "train");
    Series valid = epoch_series(metrics, "valid/top1", prefix + "valid");
    for (double& v : train.y) v *= 100;
    for (double& v : valid.y) v *= 100;
    accuracies.push_back(train);
    accuracies.push_back(valid);
  }
  line_chart(unit / "loss.png", "loss", "epoch", "training loss", losses);
  line_chart(unit / "accuracy.png", "accuracy", "epoch", "top-1 (%)", accuracies);
  report.markdown += "\n## Training curves\n";
  add_plot(report, unit, "loss.png", "loss curves");
  add_plot(report, unit, "accuracy.png", "accuracy curves");
  if (fs::exists(unit / "fold0" / "confusion.csv")) {
    const CsvTable confusion = read_csv(unit / "fold0" / "confusion.csv");
    add_table(report, "Confusion matrix (fold 0, the kept network on the test split; rows: labels, columns: predictions)",
              confusion.columns, confusion.rows);
  }
  if (fs::is_directory(unit / "fold0")) {
    variants_section(report, unit, unit / "fold0");
    plugin_tables_section(report, unit, unit / "fold0");
  }

  ReportFiles files;
  files.markdown = unit / "report.md";
  write_file_atomically(files.markdown, report.markdown);
  files.plots = report.plots;
  files.text = report.text;
  files.summary = summary;
  return files;
}

// One unit of a sweep: its grid values (in the order of the grid keys) and its record, once
// it has started.
struct SweepEntry {
  std::int64_t index = 0;
  std::vector<std::string> values;
  fs::path unit;
  std::optional<UnitRecord> record;
  const FoldRecord* fold() const { return record && !record->folds.empty() ? &record->folds[0] : nullptr; }
};

// The grid keys (from the first run's "key=value" overrides) and every run of sweep.toml.
std::vector<SweepEntry> read_sweep_entries(const fs::path& dir, const toml::table& sweep, std::vector<std::string>& keys) {
  std::vector<SweepEntry> entries;
  const toml::array* runs = sweep["run"].as_array();
  if (runs == nullptr) return entries;
  for (const toml::node& node : *runs) {
    const toml::node_view<const toml::node> run(node);
    SweepEntry entry;
    entry.index = run["index"].value_or<std::int64_t>(0);
    std::vector<std::string> run_keys;
    if (const toml::array* list = run["overrides"].as_array()) {
      for (const toml::node& o : *list) {
        const std::string text = o.value_or<std::string>("");
        const std::size_t equals = text.find('=');
        run_keys.push_back(text.substr(0, equals));
        entry.values.push_back(equals == std::string::npos ? "" : text.substr(equals + 1));
      }
    }
    if (entries.empty()) keys = run_keys;
    entry.unit = run["unit"].value_or<std::string>("");
    const fs::path unit_file = dir / "runs" / fmt::format("{}.unit", entry.index);
    if (entry.unit.empty() && fs::exists(unit_file)) {
      const std::string text = read_text_file(unit_file);
      entry.unit = text.substr(0, text.find('\n'));
    }
    if (!entry.unit.empty() && fs::exists(entry.unit / "unit.toml")) entry.record = read_unit_record(entry.unit);
    entries.push_back(std::move(entry));
  }
  return entries;
}

// Where the units came from: their QuantLab versions, experiment revisions, hosts and times.
std::string sweep_provenance(const std::vector<SweepEntry>& entries) {
  std::set<std::string> versions, revisions, hosts;
  std::string first, last;
  for (const SweepEntry& e : entries) {
    if (!e.record) continue;
    versions.insert(e.record->quantlab_version);
    revisions.insert(e.record->git_revision.empty() ? "none" : e.record->git_revision);
    hosts.insert(e.record->host);
    if (first.empty() || e.record->started < first) first = e.record->started;
    if (e.record->ended > last) last = e.record->ended;
  }
  if (versions.empty()) return "";
  return fmt::format("\nunits: QuantLab {}, experiment revision `{}`, host `{}`, {} to {}\n", fmt::join(versions, ", "),
                     fmt::join(revisions, "`, `"), fmt::join(hosts, "`, `"), first, last.empty() ? "-" : last);
}

// With a grid over experiment.seed: the units that differ only by seed, as one row each with
// the mean ± sd of their results; and, when the last other key takes three or more numbers, the
// result against it as a plot (one line per value of the remaining keys; a log2 axis when the
// numbers span a factor of 16 or more).
void sweep_summaries(Report& report, const fs::path& dir, const std::vector<std::string>& keys,
                     const std::vector<SweepEntry>& entries, bool regression) {
  const auto seed_key = std::find(keys.begin(), keys.end(), "experiment.seed");
  const auto seed = seed_key == keys.end() ? std::string::npos : static_cast<std::size_t>(seed_key - keys.begin());
  std::vector<std::string> group_keys;
  for (std::size_t k = 0; k < keys.size(); ++k) {
    if (k != seed) group_keys.push_back(keys[k]);
  }
  std::vector<std::vector<std::string>> groups;  // each group's values, in sweep order
  std::map<std::vector<std::string>, std::vector<std::pair<double, double>>> results;  // (trained, result)
  for (const SweepEntry& e : entries) {
    const FoldRecord* f = e.fold();
    if (f == nullptr || f->status != "done") continue;
    std::vector<std::string> group;
    for (std::size_t k = 0; k < e.values.size(); ++k) {
      if (k != seed) group.push_back(e.values[k]);
    }
    if (!results.count(group)) groups.push_back(group);
    results[group].emplace_back(regression ? f->trained_loss : f->trained_top1,
                                regression ? f->result_loss : f->result_top1);
  }
  const double scale = regression ? 1.0 : 100.0;
  const int digits = regression ? 4 : 2;
  if (seed != std::string::npos && !groups.empty()) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& group : groups) {
      std::vector<double> trained, result;
      for (const auto& [t, r] : results[group]) {
        trained.push_back(t);
        result.push_back(r);
      }
      std::vector<std::string> row(group);
      row.insert(row.end(), {std::to_string(trained.size()), mean_sd(trained, scale, digits), mean_sd(result, scale, digits)});
      rows.push_back(std::move(row));
    }
    std::vector<std::string> columns(group_keys);
    const std::string measure = regression ? "test loss" : "test top-1 %";
    columns.insert(columns.end(), {"seeds", measure + " (trained), mean ± sd", measure + " (result), mean ± sd"});
    add_table(report, "Over seeds", columns, rows);
  }
  if (group_keys.empty()) return;
  std::map<std::string, Series> lines;
  std::vector<double> xs;
  for (const auto& group : groups) {
    const double x = number(group.back());
    if (std::isnan(x)) return;
    std::vector<std::string> label(group.begin(), group.end() - 1);
    // Legends name the key's last part and the bare value: "scheme=alq", not "algorithm.0.scheme='alq'".
    for (std::size_t k = 0; k < label.size(); ++k) {
      std::string value = label[k];
      value.erase(std::remove_if(value.begin(), value.end(), [](char c) { return c == '\'' || c == '"'; }), value.end());
      label[k] = group_keys[k].substr(group_keys[k].rfind('.') + 1) + "=" + value;
    }
    Series& line = lines[label.empty() ? "result" : fmt::format("{}", fmt::join(label, " "))];
    double sum = 0;
    for (const auto& [t, r] : results[group]) sum += r;
    line.x.push_back(x);
    line.y.push_back(scale * sum / static_cast<double>(results[group].size()));
    xs.push_back(x);
  }
  std::sort(xs.begin(), xs.end());
  xs.erase(std::unique(xs.begin(), xs.end()), xs.end());
  if (xs.size() < 3) return;
  const bool log2_x = xs.front() > 0 && xs.back() / xs.front() >= 16;
  std::vector<Series> series;
  for (auto& [name, line] : lines) {
    line.name = name;
    if (log2_x) {
      for (double& x : line.x) x = std::log2(x);
    }
    series.push_back(line);
  }
  const std::string x_name = log2_x ? fmt::format("log2 {}", group_keys.back()) : group_keys.back();
  const std::string y_name = regression ? "test loss (result)" : "test top-1 % (result)";
  line_chart(dir / "sweep.png", fmt::format("{} vs {}{}", y_name, group_keys.back(), seed == std::string::npos ? "" : ", mean over seeds"),
             x_name, y_name, series);
  add_plot(report, dir, "sweep.png", fmt::format("{} against {}", y_name, group_keys.back()));
}

ReportFiles sweep_report(const fs::path& dir) {
  const fs::path file = dir / "sweep.toml";
  const toml::table sweep = read_toml_file(file);
  std::vector<std::string> keys;
  const std::vector<SweepEntry> entries = read_sweep_entries(dir, sweep, keys);
  Report report;
  report.markdown = fmt::format("# sweep {}\n\nexperiment `{}`\n{}", dir.filename().string(),
                                sweep["experiment"].value_or<std::string>(""), sweep_provenance(entries));
  // A regression's units have no top-1: their loss is the result.
  bool regression = false;
  std::vector<std::vector<std::string>> rows;
  for (const SweepEntry& e : entries) {
    std::vector<std::string> row{std::to_string(e.index)};
    row.insert(row.end(), e.values.begin(), e.values.end());
    row.resize(1 + keys.size());
    const FoldRecord* f = e.fold();
    if (!e.record) {
      row.insert(row.end(), {"-", "not started", "-", "-", "-", "-", "-"});
    } else {
      const FoldRecord none;
      if (f == nullptr) f = &none;
      regression = regression || (f->status == "done" && f->trained_top1 < 0);
      row.insert(row.end(), {e.unit.filename().string(), e.record->live_status(),
                             f->best_metric == "valid/top1" ? percent(f->best_value) : "-", percent(f->trained_top1),
                             percent(f->result_top1), loss_text(f->trained_loss), loss_text(f->result_loss)});
    }
    rows.push_back(std::move(row));
  }
  std::vector<std::string> columns{"#"};
  columns.insert(columns.end(), keys.begin(), keys.end());
  columns.insert(columns.end(), {"unit", "status", "best valid top-1", "test top-1 (trained)", "test top-1 (result)",
                                 "test loss (trained)", "test loss (result)"});
  add_table(report, "Units", columns, rows);
  sweep_summaries(report, dir, keys, entries, regression);
  ReportFiles files;
  files.markdown = dir / "report.md";
  write_file_atomically(files.markdown, report.markdown);
  files.plots = report.plots;
  files.text = report.text;
  files.summary = fmt::format("{} units", rows.size());
  return files;
}

}  // namespace

std::string percent(double fraction) { return fraction < 0 ? "-" : fmt::format("{:.2f}%", 100.0 * fraction); }

std::string markdown_table(const std::vector<std::string>& columns, const std::vector<std::vector<std::string>>& rows) {
  std::string text = fmt::format("| {} |\n|", fmt::join(columns, " | "));
  for (std::size_t i = 0; i < columns.size(); ++i) text += " ---: |";
  text += "\n";
  for (const auto& row : rows) text += fmt::format("| {} |\n", fmt::join(row, " | "));
  return text;
}

std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> cells(1);
  bool quoted = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        cells.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        cells.back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      cells.emplace_back();
    } else if (c != '\r') {
      cells.back() += c;
    }
  }
  return cells;
}

std::string csv_table(const std::vector<std::string>& columns, const std::vector<std::vector<std::string>>& rows) {
  std::string text = csv_line(columns) + "\n";
  for (const auto& row : rows) text += csv_line(row) + "\n";
  return text;
}

std::string csv_line(const std::vector<std::string>& cells) {
  std::string line;
  for (std::size_t i = 0; i < cells.size(); ++i) {
    if (i > 0) line += ',';
    if (cells[i].find_first_of(",\"\n") == std::string::npos) {
      line += cells[i];
      continue;
    }
    line += '"';
    for (char c : cells[i]) line += c == '"' ? std::string("\"\"") : std::string(1, c);
    line += '"';
  }
  return line;
}

ReportFiles write_report(const fs::path& dir) {
  if (fs::exists(dir / "sweep.toml")) return sweep_report(dir);
  QL_CHECK(fs::exists(dir / "unit.toml"), "{}: neither a results unit (unit.toml) nor a sweep (sweep.toml)",
           dir.string());
  return unit_report(dir);
}

}  // namespace ql::core
