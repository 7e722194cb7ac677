// What the host lends an algorithm while it runs: its own options, a log, the metrics sink,
// the device, a seed for its random streams, progress reporting, and its artefacts: tables and
// files written into the results unit atomically, which the report shows.
//
//   ctx.info("quantising {} layers", layers.size());
//   ctx.scalar("bits", bits, step);
//   ctx.write_table("layer_error", {{"layer", "relative_error"}, {{"fc1", "0.12"}}});
#pragma once

#include "quantlab/sdk/config.hpp"
#include "quantlab/sdk/log.hpp"
#include "quantlab/sdk/problem.hpp"

#include <c10/core/Device.h>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace ql {

class Network;

/// Loss and accuracies of one evaluation pass.
struct Evaluation {
  double loss = 0.0;
  double top1 = 0.0;  ///< fraction in [0, 1]; negative when not measured (regression)
  double top5 = -1.0; ///< fraction in [0, 1]; negative when not computed (<= 5 classes)
  std::int64_t samples = 0;
};

/// Rows of text cells under named columns: what a plugin reports as a table.
struct Table {
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> rows;
};

class Context : public Log {
 public:
  ~Context() override;

  /// The plugin's own table of the experiment file, merged with its defaults.
  virtual const Config& options() const = 0;
  /// The problem's spec (what the network was built for).
  virtual const DatasetSpec& spec() const = 0;
  virtual c10::Device device() const = 0;
  /// Seed for this plugin's random streams, derived from the experiment seed.
  virtual std::uint64_t seed() const = 0;
  /// Folder for the plugin's artefacts inside the experiment unit (exists). Write into it
  /// through write_table() and write_file(), which never leave half a file behind.
  virtual const std::filesystem::path& artifacts_dir() const = 0;
  /// Writes `table` as tables/NAME.csv in the artefact folder, replacing it atomically. The
  /// report shows every plugin's tables, whatever their names.
  virtual void write_table(std::string_view name, const Table& table) = 0;
  /// Writes the file NAME in the artefact folder atomically: `write` fills the temporary path
  /// it is given (with any library), then the host syncs it and renames it into place. If
  /// `write` throws, no file appears and an older one stays as it was.
  virtual void write_file(std::string_view name,
                          const std::function<void(const std::filesystem::path& temporary)>& write) = 0;

  /// One value of a scalar series ("ana/sigma/conv1") at `step`.
  virtual void scalar(std::string_view name, double value, std::int64_t step) = 0;
  /// The distribution of `values` at `step` (e.g. weights) (optional for sinks).
  virtual void histogram(std::string_view name, const at::Tensor& values, std::int64_t step) = 0;
  /// `done` of `total` units of the work called `what`.
  virtual void progress(std::string_view what, std::int64_t done, std::int64_t total) = 0;
  /// Loss and accuracy of `network` on `split` (inference mode); throws if there is no such split.
  virtual Evaluation evaluate(Network& network, Split split) = 0;
};

}  // namespace ql
