// Forward+backward throughput of topology plugins (CIFAR ResNet-20 and the CIFAR VGG of the
// ANA work) in images/s; bench/forward_backward.py measures the same networks written in
// Python with the venv's torch (the same LibTorch), and bench/run_bench.sh alternates
// the two and prints the ratio.
//
// usage: forward_backward NETWORK BATCH ITERATIONS THREADS [DEVICE [PRECISION]]
//   NETWORK: resnet20 | vgg_ana (CIFAR) | vgg16 (ImageNet, 224x224); DEVICE: cpu | cuda[:N];
//   PRECISION: fp32 | bf16 (autocast, as [run] precision)
// prints: NETWORK images_per_second
#include "quantlab/core/experiment_config.hpp"
#include "quantlab/core/host_memory.hpp"
#include "quantlab/core/plugin_registry.hpp"
#include "quantlab/core/trainer.hpp"
#include "quantlab/sdk/topology.hpp"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/nn/functional/loss.h>
#include <torch/cuda.h>
#include <torch/types.h>

#include <chrono>
#include <cstdlib>

int main(int argc, char** argv) {
  if (argc < 5 || argc > 7) {
    fmt::print(stderr, "usage: forward_backward resnet20|vgg_ana|vgg16 BATCH ITERATIONS THREADS [cpu|cuda [fp32|bf16]]\n");
    return 2;
  }
  const std::string network_name = argv[1];
  const int batch = std::stoi(argv[2]), iterations = std::stoi(argv[3]);
  const c10::Device device(argc > 5 ? argv[5] : "cpu");
  const auto precision = argc > 6 && std::string(argv[6]) == "bf16" ? ql::core::Precision::bf16 : ql::core::Precision::fp32;
  at::set_num_threads(std::stoi(argv[4]));
  ql::core::keep_freed_memory_for_reuse();  // as qlhost does
  at::globalContext().setBenchmarkCuDNN(device.is_cuda());  // as qlhost does when not deterministic

  // QL_BENCH_PLUGIN_DIR: the plugins of a GPU bundle (bench/gpu/check.sh).
  const char* plugin_dir = std::getenv("QL_BENCH_PLUGIN_DIR");
  ql::core::PluginRegistry registry({plugin_dir != nullptr ? plugin_dir : QL_BUILD_PLUGIN_DIR});
  const bool resnet = network_name == "resnet20", imagenet = network_name == "vgg16";
  const std::string plugin = resnet ? "resnet" : "vgg";
  const std::vector<std::string> options =
      resnet ? std::vector<std::string>{"depth=20", "shortcut=\"A\""}
             : std::vector<std::string>{fmt::format("config=\"{}\"", network_name)};
  auto topology = registry.create<ql::Topology>(
      plugin, ql::core::plugin_options(registry.find(ql::PluginKind::topology, plugin), options));
  ql::DatasetSpec spec;
  const std::int64_t side = imagenet ? 224 : 32;
  spec.input_shape = {3, side, side};
  spec.num_classes = imagenet ? 1000 : 10;
  torch::manual_seed(0);
  auto network = topology->build(spec);
  network->to(device);
  network->train();
  const at::Tensor inputs = torch::randn({batch, 3, side, side}, torch::device(device));
  const at::Tensor targets = torch::randint(0, spec.num_classes, {batch}, torch::dtype(torch::kInt64).device(device));

  auto step = [&] {
    for (auto& p : network->parameters()) p.mutable_grad() = at::Tensor();
    at::Tensor loss;
    {
      ql::core::AutocastScope autocast(device, precision);
      loss = torch::nn::functional::cross_entropy(network->apply(inputs).to(torch::kFloat), targets);
    }
    loss.backward();
  };
  auto synchronize = [&] {
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  step();  // warm-up (and cuDNN's choice of algorithms)
  step();
  synchronize();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) step();
  synchronize();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fmt::print("{} {:.1f}\n", network_name, batch * iterations / seconds);
  return 0;
}
