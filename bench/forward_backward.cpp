// Forward+backward throughput of topology plugins (CIFAR ResNet-20 and the CIFAR VGG of the
// ANA work) in images/s; bench/forward_backward.py measures the same networks written in
// Python with the venv's torch (the same LibTorch), and bench/run_bench.sh alternates
// the two and prints the ratio.
//
// usage: forward_backward NETWORK BATCH ITERATIONS THREADS    (NETWORK: resnet20 | vgg_ana)
// prints: NETWORK images_per_second
#include "quantlab/core/experiment_config.hpp"
#include "quantlab/core/host_memory.hpp"
#include "quantlab/core/plugin_registry.hpp"
#include "quantlab/sdk/topology.hpp"

#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/nn/functional/loss.h>
#include <torch/types.h>

#include <chrono>

int main(int argc, char** argv) {
  if (argc != 5) {
    fmt::print(stderr, "usage: forward_backward resnet20|vgg_ana BATCH ITERATIONS THREADS\n");
    return 2;
  }
  const std::string network_name = argv[1];
  const int batch = std::stoi(argv[2]), iterations = std::stoi(argv[3]);
  at::set_num_threads(std::stoi(argv[4]));
  ql::core::keep_freed_memory_for_reuse();  // as qlhost does

  ql::core::PluginRegistry registry({QL_BUILD_PLUGIN_DIR});
  const bool resnet = network_name == "resnet20";
  const std::string plugin = resnet ? "resnet" : "vgg";
  const std::vector<std::string> options =
      resnet ? std::vector<std::string>{"depth=20", "shortcut=\"A\""} : std::vector<std::string>{"config=\"vgg_ana\""};
  auto topology = registry.create<ql::Topology>(
      plugin, ql::core::plugin_options(registry.find(ql::PluginKind::topology, plugin), options));
  ql::DatasetSpec spec;
  spec.input_shape = {3, 32, 32};
  spec.num_classes = 10;
  torch::manual_seed(0);
  auto network = topology->build(spec);
  network->train();
  const at::Tensor inputs = torch::randn({batch, 3, 32, 32});
  const at::Tensor targets = torch::randint(0, 10, {batch}, torch::kInt64);

  auto step = [&] {
    for (auto& p : network->parameters()) p.mutable_grad() = at::Tensor();
    torch::nn::functional::cross_entropy(network->apply(inputs), targets).backward();
  };
  step();  // warm-up
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) step();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fmt::print("{} {:.1f}\n", network_name, batch * iterations / seconds);
  return 0;
}
