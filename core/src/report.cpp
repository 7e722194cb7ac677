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
    const int loss = table.column("loss"), top1 = table.column("top1");
    if (loss < 2 || top1 < 0 || table.rows.size() < 2) continue;
    const std::string x_name = table.columns[static_cast<std::size_t>(loss - 1)];
    std::map<std::string, Series> lines;
    double float_top1 = NAN;
    for (const auto& row : table.rows) {
      if (row[0] == "float") {
        float_top1 = number(row[static_cast<std::size_t>(top1)]);
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
      s.y.push_back(100.0 * number(row[static_cast<std::size_t>(top1)]));
    }
    std::vector<Series> series;
    for (auto& [label, s] : lines) {
      s.name = label;
      series.push_back(s);
    }
    if (!std::isnan(float_top1) && !series.empty()) {
      Series reference{"float", {}, {}};
      for (const Series& s : series) reference.x.insert(reference.x.end(), s.x.begin(), s.x.end());
      std::sort(reference.x.begin(), reference.x.end());
      reference.x = {reference.x.front(), reference.x.back()};
      reference.y = {100.0 * float_top1, 100.0 * float_top1};
      series.push_back(reference);
    }
    const std::string plot = algorithm + "_accuracy.png";
    line_chart(unit / plot, fmt::format("{}: test accuracy vs {}", algorithm, x_name), x_name, "top-1 (%)", series);
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
                    std::to_string(f.best_epoch), percent(f.trained_top1), percent(f.result_top1)});
    if (f.trained_top1 >= 0) trained.push_back(f.trained_top1);
    if (f.result_top1 >= 0) result.push_back(f.result_top1);
  }
  auto mean_std = [](const std::vector<double>& v) {
    if (v.empty()) return std::string("-");
    const double mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
    double variance = 0;
    for (double x : v) variance += (x - mean) * (x - mean);
    const double sd = v.size() > 1 ? std::sqrt(variance / static_cast<double>(v.size() - 1)) : 0.0;
    return fmt::format("{:.2f}% ± {:.2f}", 100 * mean, 100 * sd);
  };
  std::string summary;
  if (record.folds.size() > 1) {
    rows.push_back({"mean ± std", "", "", "", "", "", mean_std(trained), mean_std(result)});
    summary = fmt::format("{} folds: trained test top-1 {}, result {}", record.folds.size(), mean_std(trained),
                          mean_std(result));
  } else if (!record.folds.empty()) {
    summary = fmt::format("trained test top-1 {}, result {}", percent(record.folds[0].trained_top1),
                          percent(record.folds[0].result_top1));
  }
  add_table(report, "Results", {"fold", "status", "epochs", "best on", "best", "at epoch", "test top-1 (trained)",
                                "test top-1 (result)"},
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
  line_chart(unit / "loss.png", "loss", "epoch", "cross-entropy", losses);
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

ReportFiles sweep_report(const fs::path& dir) {
  const fs::path file = dir / "sweep.toml";
  const toml::table sweep = read_toml_file(file);
  Report report;
  report.markdown = fmt::format("# sweep {}\n\nexperiment `{}`\n", dir.filename().string(),
                                sweep["experiment"].value_or<std::string>(""));
  std::vector<std::vector<std::string>> rows;
  std::vector<Series> none;
  if (const toml::array* runs = sweep["run"].as_array()) {
    for (const toml::node& node : *runs) {
      const toml::node_view<const toml::node> run(node);
      const auto index = run["index"].value_or<std::int64_t>(0);
      std::vector<std::string> overrides;
      if (const toml::array* list = run["overrides"].as_array()) {
        for (const toml::node& o : *list) overrides.push_back(o.value_or<std::string>(""));
      }
      fs::path unit = run["unit"].value_or<std::string>("");
      const fs::path unit_file = dir / "runs" / fmt::format("{}.unit", index);
      if (unit.empty() && fs::exists(unit_file)) {
        std::string text = read_text_file(unit_file);
        unit = text.substr(0, text.find('\n'));
      }
      std::vector<std::string> row{std::to_string(index), fmt::format("{}", fmt::join(overrides, " "))};
      if (unit.empty() || !fs::exists(unit / "unit.toml")) {
        row.insert(row.end(), {"-", "not started", "-", "-", "-"});
      } else {
        const UnitRecord r = read_unit_record(unit);
        const FoldRecord f = r.folds.empty() ? FoldRecord{} : r.folds[0];
        row.insert(row.end(), {unit.filename().string(), r.live_status(),
                               f.best_metric == "valid/top1" ? percent(f.best_value) : "-",
                               percent(f.trained_top1), percent(f.result_top1)});
      }
      rows.push_back(std::move(row));
    }
  }
  add_table(report, "Units", {"#", "overrides", "unit", "status", "best valid top-1", "test top-1 (trained)",
                              "test top-1 (result)"},
            rows);
  ReportFiles files;
  files.markdown = dir / "report.md";
  write_file_atomically(files.markdown, report.markdown);
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
