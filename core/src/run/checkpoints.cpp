#include "run/checkpoints.hpp"

#include "quantlab/core/data_parallel.hpp"
#include "quantlab/core/experiment_store.hpp"
#include "run/algorithm_set.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/utils.h>

#include <fmt/format.h>

namespace ql::core::run {

namespace fs = std::filesystem;

FoldCheckpoints::FoldCheckpoints(fs::path fold_dir, Network& network, torch::optim::Optimizer& optimizer,
                                 AlgorithmSet& algorithms)
    : dir_(std::move(fold_dir)), network_(network), optimizer_(optimizer), algorithms_(algorithms) {}

namespace {

c10::Device device_of(Network& network) {
  const std::vector<at::Tensor> parameters = network.parameters();
  return parameters.empty() ? c10::Device(c10::kCPU) : parameters.front().device();
}

}  // namespace

fs::path FoldCheckpoints::path(const std::string& name) const { return dir_ / "checkpoints" / (name + ".pt"); }

void FoldCheckpoints::save(const std::string& name, const TrainingPosition& at,
                           const std::map<std::string, std::string>& quantizers) {
  const std::string written = fmt::format("{} (step {})", path(name).string(), at.step);
  save_checkpoint(path(name), [&](torch::serialize::OutputArchive& archive) {
    for (const auto& p : network_.named_parameters()) archive.write("model/" + p.key(), p.value().detach());
    for (const auto& b : network_.named_buffers()) archive.write("model/" + b.key(), b.value(), true);
    torch::serialize::OutputArchive optimizer_archive;
    optimizer_.save(optimizer_archive);
    archive.write("optimizer", optimizer_archive);
    archive.write("position", torch::tensor({at.epoch, at.step, at.progress.batches, at.progress.samples,
                                             at.progress.correct, at.best_epoch}));
    archive.write("totals", torch::tensor({at.progress.loss_sum, at.progress.seconds, at.best_score},
                                          torch::kFloat64));
    archive.write("rng/cpu", at::detail::getDefaultCPUGenerator().get_state());
    // The GPU's own stream (dropout, ANA's noise on the device), so that a GPU unit resumes exactly.
    const c10::Device device = device_of(network_);
    if (device.is_cuda()) archive.write("rng/cuda", at::globalContext().defaultGenerator(device).get_state());
    algorithms_.save_states(archive);
    for (const auto& [tensor, description] : quantizers) archive.write("quantizer/" + tensor, c10::IValue(description));
  });
  last_written_ = written;
}

TrainingPosition FoldCheckpoints::load(const std::string& name, DataParallel* world) {
  const fs::path file = path(name);
  std::string bytes = world == nullptr || world->is_root() ? read_checkpoint(file) : std::string();
  if (world != nullptr) bytes = world->broadcast_bytes(bytes);
  return load_bytes(file, bytes);
}

TrainingPosition FoldCheckpoints::load_bytes(const fs::path& file, const std::string& bytes) {
  try {
    // Position, generators and the algorithms' states on the CPU; the network's and the
    // optimiser's tensors where the network computes now, whichever device wrote them.
    torch::serialize::InputArchive archive;
    load_archive(archive, bytes);
    const c10::Device device = device_of(network_);
    torch::serialize::InputArchive on_device;
    if (!device.is_cpu()) load_archive(on_device, bytes, device);
    torch::serialize::InputArchive& network_archive = device.is_cpu() ? archive : on_device;
    torch::NoGradGuard no_grad;
    for (auto& p : network_.named_parameters()) {
      at::Tensor value;
      network_archive.read("model/" + p.key(), value);
      p.value().copy_(value);
    }
    for (auto& b : network_.named_buffers()) {
      at::Tensor value;
      network_archive.read("model/" + b.key(), value, true);
      b.value().copy_(value);
    }
    torch::serialize::InputArchive optimizer_archive;
    network_archive.read("optimizer", optimizer_archive);
    optimizer_.load(optimizer_archive);
    at::Tensor position, totals, rng;
    archive.read("position", position);
    archive.read("totals", totals);
    archive.read("rng/cpu", rng);
    auto generator = at::detail::getDefaultCPUGenerator();
    generator.set_state(rng);
    at::Tensor cuda_rng;
    // A unit written on the CPU has no GPU stream: the GPU's generator keeps its seed.
    if (device.is_cuda() && archive.try_read("rng/cuda", cuda_rng)) {
      at::Generator cuda_generator = at::globalContext().defaultGenerator(device);
      cuda_generator.set_state(cuda_rng);
    }
    algorithms_.load_states(archive);
    const auto p = position.accessor<std::int64_t, 1>();
    const auto t = totals.accessor<double, 1>();
    TrainingPosition at;
    at.epoch = p[0];
    at.step = p[1];
    at.progress.batches = p[2];
    at.progress.samples = p[3];
    at.progress.correct = p[4];
    at.best_epoch = p[5];
    at.progress.loss_sum = t[0];
    at.progress.seconds = t[1];
    at.best_score = t[2];
    return at;
  } catch (const std::exception& e) {
    throw Error(fmt::format("{}: cannot resume from this checkpoint: {}", file.string(), message_of(e)));
  }
}

}  // namespace ql::core::run
