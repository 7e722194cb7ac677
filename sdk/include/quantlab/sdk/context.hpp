// What the host lends a plugin while it runs: its own options, a logger, the metrics sink,
// the device, a seed for its random streams, progress reporting and its artefact folder.
//
//   ctx.info("quantising {} layers", layers.size());
//   ctx.scalar("uniform/bits", bits, step);
//   ctx.progress("calibration", done, total);
#pragma once

#include "quantlab/sdk/config.hpp"
#include "quantlab/sdk/problem.hpp"

#include <c10/core/Device.h>
#include <fmt/format.h>

#include <cstdint>
#include <filesystem>
#include <string_view>

namespace ql {

class Network;

enum class LogLevel { debug, info, warning };

/// Loss and accuracies of one evaluation pass.
struct Evaluation {
  double loss = 0.0;
  double top1 = 0.0;  ///< fraction in [0, 1]
  double top5 = -1.0; ///< fraction in [0, 1]; negative when not computed (<= 5 classes)
  std::int64_t samples = 0;
};

class Context {
 public:
  virtual ~Context();

  /// The plugin's own table of the experiment file, merged with its defaults.
  virtual const Config& options() const = 0;
  /// The problem's spec (what the network was built for).
  virtual const DatasetSpec& spec() const = 0;
  virtual c10::Device device() const = 0;
  /// Seed for this plugin's random streams, derived from the experiment seed.
  virtual std::uint64_t seed() const = 0;
  /// Folder for the plugin's artefacts inside the experiment unit (exists).
  virtual const std::filesystem::path& artifacts_dir() const = 0;

  virtual void log(LogLevel level, std::string_view message) = 0;
  /// One value of a scalar series ("ana/sigma/conv1") at `step`.
  virtual void scalar(std::string_view name, double value, std::int64_t step) = 0;
  /// The distribution of `values` at `step` (e.g. weights) (optional for sinks).
  virtual void histogram(std::string_view name, const at::Tensor& values, std::int64_t step) = 0;
  /// `done` of `total` units of the work called `what`.
  virtual void progress(std::string_view what, std::int64_t done, std::int64_t total) = 0;
  /// Loss and accuracy of `network` on `split` (inference mode); throws if there is no such split.
  virtual Evaluation evaluate(Network& network, Split split) = 0;

  template <typename... Args>
  void info(fmt::format_string<Args...> format, Args&&... args) {
    log(LogLevel::info, fmt::format(format, std::forward<Args>(args)...));
  }
  template <typename... Args>
  void warn(fmt::format_string<Args...> format, Args&&... args) {
    log(LogLevel::warning, fmt::format(format, std::forward<Args>(args)...));
  }
};

}  // namespace ql
