#include "run/checkpoints.hpp"

#include "quantlab/core/data_parallel.hpp"
#include "quantlab/core/experiment_store.hpp"
#include "quantlab/sdk/error.hpp"
#include "run/algorithm_set.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/utils.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

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

void read_network(torch::serialize::InputArchive& archive, Network& network) {
  torch::NoGradGuard no_grad;
  const auto load = [&](const std::string& name, at::Tensor& tensor) {
    at::Tensor stored;
    QL_CHECK(archive.try_read("model/" + name, stored, /*is_buffer=*/true), "no tensor '{}' for this network", name);
    QL_CHECK(stored.sizes() == tensor.sizes(), "'{}' is [{}] but the network's is [{}]", name,
             fmt::join(stored.sizes(), ", "), fmt::join(tensor.sizes(), ", "));
    tensor.copy_(stored);
  };
  for (auto& p : network.named_parameters()) load(p.key(), p.value());
  for (auto& b : network.named_buffers()) load(b.key(), b.value());
}

void write_result_record(torch::serialize::OutputArchive& archive, const ResultRecord& record) {
  for (const auto& [tensor, description] : record.quantizers) archive.write("quantizer/" + tensor, c10::IValue(description));
  for (const auto& [tensor, form] : record.integer_forms) {
    const std::string key = "integer/" + tensor + "/";
    archive.write(key + "codes", form.codes.to(torch::kCPU, torch::kInt64));
    archive.write(key + "scale", form.scale.to(torch::kCPU, torch::kFloat32));
    archive.write(key + "zero_point", form.zero_point.to(torch::kCPU, torch::kInt64));
    archive.write(key + "axis", torch::tensor(form.axis));
  }
  for (const auto& [activation, grid] : record.grids) {
    const std::string key = "grid/" + activation + "/";
    archive.write(key + "range", torch::tensor(static_cast<std::int64_t>(grid.range)));
    archive.write(key + "scale", torch::tensor(grid.scale));
    archive.write(key + "zero_point", torch::tensor(grid.zero_point));
    archive.write(key + "low", torch::tensor(grid.low));
    archive.write(key + "high", torch::tensor(grid.high));
    archive.write(key + "offset", torch::tensor(grid.offset));
    archive.write(key + "per_sample", torch::tensor(std::int64_t{grid.per_sample ? 1 : 0}));
  }
  if (record.input_encoding) {
    const auto& steps = record.input_encoding->steps;
    std::vector<std::int64_t> operations;
    for (std::size_t k = 0; k < steps.size(); ++k) {
      operations.push_back(static_cast<std::int64_t>(steps[k].operation));
      archive.write(fmt::format("input_encoding/values/{}", k), torch::tensor(steps[k].values, torch::kFloat32));
    }
    archive.write("input_encoding/operations", torch::tensor(operations, torch::kInt64));
  }
}

namespace {

// The names X of the archive's keys "<prefix>X<suffix>".
std::vector<std::string> names_between(const std::vector<std::string>& keys, std::string_view prefix,
                                       std::string_view suffix) {
  std::vector<std::string> names;
  for (const std::string& key : keys) {
    if (key.rfind(prefix, 0) != 0 || key.size() < prefix.size() + suffix.size() ||
        key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0) {
      continue;
    }
    names.push_back(key.substr(prefix.size(), key.size() - prefix.size() - suffix.size()));
  }
  return names;
}

template <typename T>
T read_scalar(torch::serialize::InputArchive& archive, const std::string& key) {
  at::Tensor value;
  archive.read(key, value);
  QL_CHECK(value.numel() == 1, "the result's '{}' is not one number", key);
  return value.item<T>();
}

AffineGrid read_grid(torch::serialize::InputArchive& archive, const std::string& activation) {
  const std::string key = "grid/" + activation + "/";
  AffineGrid grid;
  const auto range = read_scalar<std::int64_t>(archive, key + "range");
  QL_CHECK(range == static_cast<std::int64_t>(AffineGrid::Range::fixed) ||
               range == static_cast<std::int64_t>(AffineGrid::Range::max_abs),
           "the result's grid of '{}' has an unknown range ({})", activation, range);
  grid.range = static_cast<AffineGrid::Range>(range);
  grid.scale = read_scalar<float>(archive, key + "scale");
  grid.zero_point = read_scalar<std::int64_t>(archive, key + "zero_point");
  grid.low = read_scalar<std::int64_t>(archive, key + "low");
  grid.high = read_scalar<std::int64_t>(archive, key + "high");
  grid.offset = read_scalar<float>(archive, key + "offset");
  grid.per_sample = read_scalar<std::int64_t>(archive, key + "per_sample") != 0;
  QL_CHECK(grid.scale > 0 && std::isfinite(grid.scale) && std::isfinite(grid.offset) && grid.low <= grid.high,
           "the result's grid of '{}' is malformed (scale {}, offset {}, codes {} to {})", activation, grid.scale,
           grid.offset, grid.low, grid.high);
  return grid;
}

}  // namespace

ResultRecord read_result_record(torch::serialize::InputArchive& archive) {
  ResultRecord record;
  const std::vector<std::string> keys = archive.keys();
  for (const std::string& activation : names_between(keys, "grid/", "/range")) {
    record.grids.emplace(activation, read_grid(archive, activation));
  }
  for (const std::string& tensor : names_between(keys, "quantizer/", "")) {
    at::IValue description;
    if (archive.try_read("quantizer/" + tensor, description) && description.isString()) {
      record.quantizers.emplace(tensor, description.toStringRef());
    }
  }
  for (const std::string& tensor : names_between(keys, "integer/", "/codes")) {
    const std::string key = "integer/" + tensor + "/codes";
    IntegerForm form;
    at::Tensor axis;
    archive.read(key, form.codes);
    archive.read("integer/" + tensor + "/scale", form.scale);
    archive.read("integer/" + tensor + "/zero_point", form.zero_point);
    archive.read("integer/" + tensor + "/axis", axis);
    form.axis = axis.item<std::int64_t>();
    record.integer_forms.emplace(tensor, std::move(form));
  }
  if (std::find(keys.begin(), keys.end(), "input_encoding/operations") != keys.end()) {
    at::Tensor operations;
    archive.read("input_encoding/operations", operations);
    InputEncoding encoding;
    for (std::int64_t k = 0; k < operations.numel(); ++k) {
      at::Tensor values;
      archive.read(fmt::format("input_encoding/values/{}", k), values);
      const auto operation = static_cast<InputStep::Operation>(operations[k].item<std::int64_t>());
      QL_CHECK(operation == InputStep::Operation::subtract || operation == InputStep::Operation::multiply ||
                   operation == InputStep::Operation::divide,
               "the result's input encoding has an unknown step ({})", operations[k].item<std::int64_t>());
      encoding.steps.push_back({operation, std::vector<float>(values.data_ptr<float>(),
                                                              values.data_ptr<float>() + values.numel())});
    }
    record.input_encoding = std::move(encoding);
  }
  return record;
}

fs::path FoldCheckpoints::path(const std::string& name) const { return dir_ / "checkpoints" / (name + ".pt"); }

void FoldCheckpoints::save(const std::string& name, const TrainingPosition& at, const ResultRecord& record) {
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
    write_result_record(archive, record);
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
    read_network(network_archive, network_);
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
