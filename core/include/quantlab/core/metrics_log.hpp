// The metrics of one training run: every scalar series and weight histogram, kept in memory,
// written to metrics.h5 (HDF5, one dataset per series) and streamed to a TensorBoard event
// file. metrics.h5 is rewritten atomically at every flush, so a killed run leaves the file of
// its last flush; on resume the series are read back and cut at the checkpoint's step.
//
//   MetricsLog metrics(fold_dir, /*resume_step=*/-1);
//   metrics.scalar("train/loss", 0.41, step);
//   metrics.histogram("weights/fc1", fc1->weight, step);
//   metrics.flush();
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ql::core {

struct ScalarPoint {
  std::int64_t step;
  double wall_time;  ///< seconds since the Unix epoch
  double value;
};

/// Counts of values in equal-width bins between `min` and `max`.
struct HistogramPoint {
  std::int64_t step = 0;
  double wall_time = 0.0;
  double min = 0.0, max = 0.0, num = 0.0, sum = 0.0, sum_squares = 0.0;
  std::vector<double> bin_edges;  ///< bins + 1 increasing edges
  std::vector<double> counts;     ///< bins counts
};

HistogramPoint histogram_of(const at::Tensor& values, int bins, std::int64_t step, double wall_time);

struct MetricsData {
  std::map<std::string, std::vector<ScalarPoint>> scalars;
  std::map<std::string, std::vector<HistogramPoint>> histograms;
  /// Drops every point after `step` (what a resume from a checkpoint at `step` must forget).
  void truncate_after(std::int64_t step);
};

/// HDF5 layout: /<series> (a series name "train/loss" is group train, dataset loss) is a 1-D
/// compound dataset {step int64, wall_time float64, value float64}; /histograms/<name>/ has
/// step [K], wall_time [K], bin_edges [K, bins+1] and counts [K, bins].
void write_metrics_h5(const std::filesystem::path& path, const MetricsData& data);
/// Throws ql::Error naming the file for a missing or malformed file.
MetricsData read_metrics_h5(const std::filesystem::path& path);

/// TensorBoard's masked CRC-32C of TFRecord framing.
std::uint32_t masked_crc32c(const void* data, std::size_t size);

/// Appends events to <dir>/events.out.tfevents.<time>.<host>.<pid>: TFRecord framing
/// (length, masked CRC of the length, the Event, masked CRC of the Event).
class EventFileWriter {
 public:
  /// `start_step` >= 0 writes a SessionLog START at that step: TensorBoard then drops what an
  /// earlier, interrupted attempt wrote at or after it.
  EventFileWriter(const std::filesystem::path& dir, std::int64_t start_step);
  ~EventFileWriter();
  EventFileWriter(const EventFileWriter&) = delete;
  EventFileWriter& operator=(const EventFileWriter&) = delete;

  void scalar(std::string_view tag, double value, std::int64_t step, double wall_time);
  void histogram(std::string_view tag, const HistogramPoint& histogram);
  void flush();
  const std::filesystem::path& path() const { return path_; }

 private:
  void write_record(const std::string& bytes);
  std::filesystem::path path_;
  struct File;
  std::unique_ptr<File> file_;
};

class MetricsLog {
 public:
  /// Starts the log of `dir`; with `resume_step` >= 0 it continues dir/metrics.h5 from that step.
  MetricsLog(std::filesystem::path dir, std::int64_t resume_step);
  ~MetricsLog();

  void scalar(std::string_view name, double value, std::int64_t step);
  void histogram(std::string_view name, const at::Tensor& values, std::int64_t step);
  /// Writes metrics.h5 and flushes the event file; throws ql::Error (disk full, ...) naming the file.
  void flush();
  const MetricsData& data() const { return data_; }

 private:
  std::filesystem::path dir_;
  MetricsData data_;
  std::unique_ptr<EventFileWriter> events_;
};

}  // namespace ql::core
