// Training throughput of the host against its ceiling, measured in one run.
//
//   ceiling: a plain LibTorch loop over pre-loaded tensors (torch::nn::Linear + ReLU, the
//            same widths, Adam, shuffled index_select batches) — what a hand-written script does;
//   host:    core's trainer: the mnist plugin's Dataset through the prefetching BatchLoader,
//            the mlp plugin's network of SDK quantisable layers, loaded from .so files.
// Epochs of the two alternate, so machine noise hits both alike; the median of each is reported.
//
// usage: train_throughput [EXPERIMENT.toml] [epochs per loop] [threads]
#include "quantlab/core/batch_loader.hpp"
#include "quantlab/core/experiment_config.hpp"
#include "quantlab/core/gradient_exchange.hpp"
#include "quantlab/core/host_memory.hpp"
#include "quantlab/core/plugin_registry.hpp"
#include "quantlab/core/trainer.hpp"
#include "quantlab/sdk/problem.hpp"
#include "quantlab/sdk/topology.hpp"

#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adam.h>

#include <algorithm>
#include <chrono>
#include <thread>

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const std::string experiment = argc > 1 ? argv[1] : QL_SOURCE_DIR "/examples/fashion_mnist_mlp.toml";
  const int epochs = argc > 2 ? std::stoi(argv[2]) : 5;
  const int threads = argc > 3 ? std::stoi(argv[3]) : static_cast<int>(std::thread::hardware_concurrency());
  at::set_num_threads(threads);
  ql::core::keep_freed_memory_for_reuse();  // as qlhost does

  ql::core::PluginRegistry registry({QL_BUILD_PLUGIN_DIR});
  const auto config = ql::core::ExperimentConfig::load(experiment, {}, registry);
  const auto settings = ql::core::TrainingSettings::from(config.section("training"));
  auto problem = registry.create<ql::Problem>(config.problem().name, config.problem().options);
  auto topology = registry.create<ql::Topology>(config.topology().name, config.topology().options);
  const auto train = problem->dataset(ql::Split::train, ql::stderr_log());
  const ql::DatasetSpec spec = problem->spec();
  const std::int64_t n = train->size();
  const std::int64_t batch_size = settings.batch_size;

  // Ceiling: every training image normalised once, up front.
  const ql::Batch all = train->get_batch(torch::arange(n, torch::kInt64), 0, false);
  const at::Tensor inputs = all.inputs.flatten(1).contiguous();
  const at::Tensor targets = all.targets;
  torch::manual_seed(1);
  torch::nn::Sequential plain;
  std::int64_t width = inputs.size(1);
  for (std::int64_t hidden : config.topology().options.get_int_list("hidden")) {
    plain->push_back(torch::nn::Linear(width, hidden));
    plain->push_back(torch::nn::ReLU());
    width = hidden;
  }
  plain->push_back(torch::nn::Linear(width, spec.num_classes));
  torch::optim::Adam plain_optimizer(plain->parameters(), torch::optim::AdamOptions(settings.lr));
  auto plain_epoch = [&](int epoch) {
    torch::Generator generator = at::detail::createCPUGenerator(static_cast<std::uint64_t>(epoch));
    const at::Tensor order = torch::randperm(n, generator, torch::kInt64);
    const auto start = Clock::now();
    for (std::int64_t begin = 0; begin < n; begin += batch_size) {
      const at::Tensor index = order.slice(0, begin, std::min(begin + batch_size, n));
      const at::Tensor x = inputs.index_select(0, index);
      const at::Tensor y = targets.index_select(0, index);
      plain_optimizer.zero_grad();
      const at::Tensor loss = torch::nn::functional::cross_entropy(plain->forward(x), y);
      loss.backward();
      plain_optimizer.step();
    }
    return static_cast<double>(n) / std::chrono::duration<double>(Clock::now() - start).count();
  };

  // Host: the same path `qlhost run` takes.
  torch::manual_seed(1);
  auto network = topology->build(spec);
  auto optimizer = ql::core::make_optimizer(settings, network->parameters());
  auto host_epoch = [&](int epoch) {
    ql::core::BatchLoader loader(train, ql::core::epoch_order(n, 1, epoch), batch_size, 2, true, 4);
    // A step callback, as qlhost always passes one (it reads each step's loss).
    auto exchange = ql::core::make_gradient_exchange(1, nullptr, nullptr);
    const auto stats = ql::core::train_epoch(*network, *optimizer, loader, c10::kCPU, {}, *exchange,
                                             [](const ql::core::EpochProgress&, double) {});
    return stats.images_per_second();
  };

  // One warm-up epoch each, then alternate.
  plain_epoch(0);
  host_epoch(0);
  std::vector<double> plain_rates, host_rates;
  for (int epoch = 1; epoch <= epochs; ++epoch) {
    plain_rates.push_back(plain_epoch(epoch));
    host_rates.push_back(host_epoch(epoch));
  }
  const double ceiling = median(plain_rates), host = median(host_rates);
  fmt::print("training throughput, {} ({} train images, batch {}, {} threads, median of {} epochs)\n",
             experiment, n, batch_size, threads, epochs);
  fmt::print("| loop | images/s | ratio to ceiling |\n| --- | ---: | ---: |\n");
  fmt::print("| plain LibTorch over pre-loaded tensors (ceiling) | {:.0f} | 1.000 |\n", ceiling);
  fmt::print("| qlhost trainer (plugins, prefetching loader) | {:.0f} | {:.3f} |\n", host, host / ceiling);
  return 0;
}
