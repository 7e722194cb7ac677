#include "run/host_context.hpp"

#include "quantlab/core/batch_loader.hpp"
#include "quantlab/core/data_parallel.hpp"
#include "quantlab/core/metrics_log.hpp"
#include "quantlab/core/report.hpp"
#include "quantlab/sdk/error.hpp"
#include "run/artifacts.hpp"

#include <torch/types.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace ql::core::run {

namespace fs = std::filesystem;

namespace {

// Every rank's predictions in the split's order: rank r evaluated samples r, r + size, ...
// One all-reduce of a [samples, 1 + 2k] float64 table (labels and classes are exact in it).
Predictions gather_predictions(DataParallel& world, const Predictions& mine, std::int64_t samples, std::int64_t k) {
  std::vector<double> table(static_cast<std::size_t>(samples * (1 + 2 * k)), 0.0);
  const std::int64_t rows = mine.labels.defined() ? mine.labels.size(0) : 0;
  if (rows > 0) {
    const auto labels = mine.labels.accessor<std::int64_t, 1>();
    const auto classes = mine.top_classes.accessor<std::int64_t, 2>();
    const auto scores = mine.top_scores.accessor<float, 2>();
    for (std::int64_t i = 0; i < rows; ++i) {
      double* row = table.data() + (world.rank() + i * world.size()) * (1 + 2 * k);
      row[0] = static_cast<double>(labels[i]);
      for (std::int64_t j = 0; j < k; ++j) {
        row[1 + j] = static_cast<double>(classes[i][j]);
        row[1 + k + j] = static_cast<double>(scores[i][j]);
      }
    }
  }
  world.all_reduce_sum(table);
  const at::Tensor all = torch::from_blob(table.data(), {samples, 1 + 2 * k}, torch::kFloat64).clone();
  return {all.select(1, 0).to(torch::kLong), all.narrow(1, 1, k).to(torch::kLong),
          all.narrow(1, 1 + k, k).to(torch::kFloat)};
}

}  // namespace

Evaluation evaluate_split(const FoldEnvironment& env, Network& network, Split split, Predictions* predictions) {
  auto dataset = env.data->of(split);
  QL_CHECK(dataset != nullptr, "the problem has no {} split to evaluate on", to_string(split));
  std::vector<std::int64_t> order = sequential_order(dataset->size());
  if (env.world != nullptr) {
    std::vector<std::int64_t> mine;
    for (std::size_t i = static_cast<std::size_t>(env.world->rank()); i < order.size();
         i += static_cast<std::size_t>(env.world->size())) {
      mine.push_back(order[i]);
    }
    order = std::move(mine);
  }
  BatchLoader loader(dataset, std::move(order), env.eval_batch_size, 0, /*augment=*/false, env.prefetch);
  loader.pin_memory(env.device.is_cuda());
  Evaluation e = evaluate(network, loader, env.device, env.top5, env.loss, env.precision, predictions);
  if (env.world == nullptr) return e;
  if (predictions != nullptr) {
    *predictions = gather_predictions(*env.world, *predictions, dataset->size(), std::min<std::int64_t>(5, env.spec.num_classes));
  }
  const auto n = static_cast<double>(e.samples);
  std::vector<double> sums{e.loss * n, static_cast<double>(std::llround(e.top1 * n)),
                           e.top5 >= 0 ? static_cast<double>(std::llround(e.top5 * n)) : 0.0, n};
  env.world->all_reduce_sum(sums);
  Evaluation total;
  total.samples = std::llround(sums[3]);
  if (total.samples > 0) {
    total.loss = sums[0] / sums[3];
    total.top1 = e.top1 < 0 ? -1.0 : sums[1] / sums[3];  // regression: not measured on any rank
    total.top5 = env.top5 ? sums[2] / sums[3] : -1.0;
  }
  return total;
}

std::string describe(const Evaluation& e) {
  std::string text = fmt::format("loss {:.4f}", e.loss);
  if (e.top1 >= 0) text += fmt::format(" top1 {}", percent(e.top1));
  if (e.top5 >= 0) text += fmt::format(" top5 {}", percent(e.top5));
  return text;
}

HostContext::HostContext(Config options, std::string plugin, const FoldEnvironment& env, std::uint64_t seed,
                         fs::path artifacts)
    : options_(std::move(options)), plugin_(std::move(plugin)), env_(env), seed_(seed),
      artifacts_(std::move(artifacts)) {}

// Made on first use, so that a plugin that writes nothing leaves no empty folder.
const fs::path& HostContext::artifacts_dir() const {
  std::error_code error;
  fs::create_directories(artifacts_, error);
  QL_CHECK(!error, "cannot create {}: {}", artifacts_.string(), error.message());
  return artifacts_;
}

void ConsoleLog::log(LogLevel level, std::string_view message) {
  const std::string line = fmt::format("[{}] {}", plugin_, message);
  if (level == LogLevel::warning) console_.warn(line);
  else if (level == LogLevel::info) console_.info(line);
}

void HostContext::write_table(std::string_view name, const Table& table) {
  write_artifact_table(artifacts_dir(), name, table);
}

void HostContext::write_file(std::string_view name, const std::function<void(const fs::path& temporary)>& write) {
  write_artifact_file(artifacts_dir(), name, write);
}

void HostContext::log(LogLevel level, std::string_view message) {
  const std::string line = fmt::format("{}[{}] {}", env_.fold_label, plugin_, message);
  if (level == LogLevel::warning) env_.console->warn(line);
  else if (level == LogLevel::info) env_.console->info(line);
}

void HostContext::scalar(std::string_view name, double value, std::int64_t step) {
  env_.metrics->scalar(fmt::format("{}/{}", plugin_, name), value, step);
}

void HostContext::histogram(std::string_view name, const at::Tensor& values, std::int64_t step) {
  env_.metrics->histogram(fmt::format("{}/{}", plugin_, name), values, step);
}

void HostContext::progress(std::string_view what, std::int64_t done, std::int64_t total) {
  env_.console->progress(fmt::format("[{}] {}", plugin_, what), done, total);
}

Evaluation HostContext::evaluate(Network& network, Split split) { return evaluate_split(env_, network, split); }

std::int64_t HostCalibration::size() const { return env_.data->train->size(); }

void HostCalibration::for_each_batch(std::int64_t max_samples, const std::function<void(const Batch&)>& visit) {
  std::vector<std::int64_t> order = epoch_order(size(), seed_, 0);
  order.resize(static_cast<std::size_t>(std::clamp<std::int64_t>(max_samples, 0, size())));
  BatchLoader loader(env_.data->train, std::move(order), env_.eval_batch_size, 0, /*augment=*/false, env_.prefetch);
  loader.pin_memory(env_.device.is_cuda());
  while (auto batch = loader.next()) visit(*batch);
}

}  // namespace ql::core::run
