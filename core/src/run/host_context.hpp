// What the host lends plugins while one fold runs: the fold's data and settings (FoldEnvironment),
// evaluation on a split (split over data-parallel ranks), each algorithm's Context, and the
// calibration samples of post-training methods.
#pragma once

#include "quantlab/core/console.hpp"
#include "quantlab/core/trainer.hpp"
#include "quantlab/sdk/algorithm.hpp"

#include <c10/core/Device.h>

#include <cstdint>
#include <filesystem>
#include <string>

namespace ql::core {
class DataParallel;
class MetricsLog;
}  // namespace ql::core

namespace ql::core::run {

/// The data and settings every part of one fold's run reads.
struct FoldEnvironment {
  const Splits* data = nullptr;
  DatasetSpec spec;
  c10::Device device{c10::kCPU};
  Precision precision = Precision::fp32;
  std::int64_t eval_batch_size = 256;
  std::size_t prefetch = 0;
  bool top5 = false;
  LossKind loss = LossKind::cross_entropy;
  Console* console = nullptr;
  MetricsLog* metrics = nullptr;
  std::string fold_label;  ///< "" or "fold 2/5: ", to start console lines with
  DataParallel* world = nullptr;
};

/// Loss and accuracy on `split`; in data-parallel training each rank takes every size-th
/// sample and the sums are all-reduced, so every rank gets the whole split's figures. With
/// `predictions`, also every sample's, in the split's order (gathered from all ranks).
Evaluation evaluate_split(const FoldEnvironment& env, Network& network, Split split,
                          Predictions* predictions = nullptr);

/// "loss 0.3412 top1 88.10% top5 99.20%".
std::string describe(const Evaluation& e);

/// A problem's Log: its lines on the console after "[NAME] "; safe from loader threads.
class ConsoleLog : public Log {
 public:
  ConsoleLog(Console& console, std::string plugin) : console_(console), plugin_(std::move(plugin)) {}
  void log(LogLevel level, std::string_view message) override;

 private:
  Console& console_;
  std::string plugin_;
};

/// One algorithm's Context: its options, seed and artefact folder; logs and metrics under its name.
class HostContext : public Context {
 public:
  HostContext(Config options, std::string plugin, const FoldEnvironment& env, std::uint64_t seed,
              std::filesystem::path artifacts);

  const Config& options() const override { return options_; }
  const DatasetSpec& spec() const override { return env_.spec; }
  c10::Device device() const override { return env_.device; }
  std::uint64_t seed() const override { return seed_; }
  const std::filesystem::path& artifacts_dir() const override;
  void write_table(std::string_view name, const Table& table) override;
  void write_file(std::string_view name,
                  const std::function<void(const std::filesystem::path& temporary)>& write) override;
  void log(LogLevel level, std::string_view message) override;
  void scalar(std::string_view name, double value, std::int64_t step) override;
  void histogram(std::string_view name, const at::Tensor& values, std::int64_t step) override;
  void progress(std::string_view what, std::int64_t done, std::int64_t total) override;
  Evaluation evaluate(Network& network, Split split) override;

 private:
  Config options_;
  std::string plugin_;
  const FoldEnvironment& env_;
  std::uint64_t seed_;
  std::filesystem::path artifacts_;
};

/// The training split in a fixed seeded order, without augmentation.
class HostCalibration : public Calibration {
 public:
  HostCalibration(const FoldEnvironment& env, std::uint64_t seed) : env_(env), seed_(seed) {}
  std::int64_t size() const override;
  void for_each_batch(std::int64_t max_samples, const std::function<void(const Batch&)>& visit) override;

 private:
  const FoldEnvironment& env_;
  std::uint64_t seed_;
};

}  // namespace ql::core::run
