// Reports of results units and sweeps: report.md with tables and PNG plots (PLplot's cairo
// driver) next to it, and the same tables as text for the terminal.
//
// A unit's report: per-fold results (mean and standard deviation over folds), loss and
// accuracy curves from each fold's metrics.h5, and for each algorithm with variants its
// accuracy table and plot (top-1 against the variant's last parameter, one line per value of
// the others: bits, alphabet radius) and the per-layer relative weight change of each variant.
// A sweep's report compares its units in one table.
//
//   ReportFiles files = write_report("logs/mnist/mlp/exp0003");
//   std::cout << files.text;
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace ql::core {

struct ReportFiles {
  std::filesystem::path markdown;            ///< report.md
  std::vector<std::filesystem::path> plots;  ///< the PNG files written
  std::string text;                          ///< the tables, for the terminal
  std::string summary;                       ///< one line: the main result
};

/// `dir` is a results unit (unit.toml) or a sweep folder (sweep.toml). Throws ql::Error naming
/// what is missing or malformed.
ReportFiles write_report(const std::filesystem::path& dir);

/// A fraction as "12.34%", or "-" for a negative (not measured) value.
std::string percent(double fraction);

/// A Markdown table (numbers right-aligned).
std::string markdown_table(const std::vector<std::string>& columns,
                           const std::vector<std::vector<std::string>>& rows);

/// One CSV line split into cells ("..." quoting with "" escapes), and the reverse.
std::vector<std::string> split_csv_line(const std::string& line);
std::string csv_line(const std::vector<std::string>& cells);
/// A whole CSV text: the header line, then a line a row.
std::string csv_table(const std::vector<std::string>& columns, const std::vector<std::vector<std::string>>& rows);

}  // namespace ql::core
