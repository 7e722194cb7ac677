#include "quantlab/core/data_parallel.hpp"

#include "quantlab/sdk/error.hpp"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <ATen/Functions.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>

extern char** environ;

namespace ql::core {

namespace {

std::map<std::string, std::string> process_environment() {
  std::map<std::string, std::string> variables;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string text(*entry);
    const auto equals = text.find('=');
    if (equals != std::string::npos) variables[text.substr(0, equals)] = text.substr(equals + 1);
  }
  return variables;
}

std::int64_t integer_variable(const std::map<std::string, std::string>& environment, const std::string& name,
                              std::int64_t low, std::int64_t high) {
  const std::string& text = environment.at(name);
  std::size_t used = 0;
  std::int64_t value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || value < low || value > high) {
    throw ConfigError(fmt::format("environment variable {}={}: expected an integer in [{}, {}]", name, text, low, high));
  }
  return value;
}

bool has(const std::map<std::string, std::string>& environment, const std::string& name) {
  const auto found = environment.find(name);
  return found != environment.end() && !found->second.empty();
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

}  // namespace

std::string first_slurm_host(const std::string& node_list) {
  // "a[1-3,5],b" -> "a1"; "a,b" -> "a"; zero padding kept ("n[007-009]" -> "n007").
  const auto end = node_list.find_first_of(",[");
  if (end == std::string::npos || node_list[end] == ',') return node_list.substr(0, end);
  const auto close = node_list.find(']', end);
  if (close == std::string::npos) throw ConfigError(fmt::format("SLURM_JOB_NODELIST={}: unbalanced '['", node_list));
  const std::string first_range = node_list.substr(end + 1, node_list.find_first_of(",-]", end + 1) - end - 1);
  return node_list.substr(0, end) + first_range;
}

std::optional<WorldSettings> WorldSettings::from_environment() { return from_environment(process_environment()); }

std::optional<WorldSettings> WorldSettings::from_environment(const std::map<std::string, std::string>& environment) {
  WorldSettings world;
  if (has(environment, "WORLD_SIZE") || has(environment, "RANK")) {
    if (!has(environment, "WORLD_SIZE") || !has(environment, "RANK")) {
      throw ConfigError(fmt::format("environment: RANK and WORLD_SIZE must be set together (found only {})",
                                    has(environment, "RANK") ? "RANK" : "WORLD_SIZE"));
    }
    world.size = static_cast<int>(integer_variable(environment, "WORLD_SIZE", 1, 65536));
    world.rank = static_cast<int>(integer_variable(environment, "RANK", 0, world.size - 1));
    if (has(environment, "MASTER_ADDR")) world.master_addr = environment.at("MASTER_ADDR");
  } else if (has(environment, "SLURM_NTASKS") && has(environment, "SLURM_PROCID")) {
    world.size = static_cast<int>(integer_variable(environment, "SLURM_NTASKS", 1, 65536));
    world.rank = static_cast<int>(integer_variable(environment, "SLURM_PROCID", 0, world.size - 1));
    if (has(environment, "MASTER_ADDR")) world.master_addr = environment.at("MASTER_ADDR");
    else if (has(environment, "SLURM_JOB_NODELIST")) world.master_addr = first_slurm_host(environment.at("SLURM_JOB_NODELIST"));
    // Jobs sharing a node must not share a port: derive one from the job id unless given.
    if (!has(environment, "MASTER_PORT") && has(environment, "SLURM_JOB_ID")) {
      world.master_port = 20000 + static_cast<int>(integer_variable(environment, "SLURM_JOB_ID", 0, INT64_MAX) % 20000);
    }
  } else {
    return std::nullopt;
  }
  if (has(environment, "MASTER_PORT")) world.master_port = static_cast<int>(integer_variable(environment, "MASTER_PORT", 1, 65535));
  if (has(environment, "QL_DIST_TIMEOUT_S")) {
    world.timeout = std::chrono::seconds(integer_variable(environment, "QL_DIST_TIMEOUT_S", 1, 86400));
  }
  if (has(environment, "LOCAL_WORLD_SIZE")) {
    world.local_ranks = static_cast<int>(integer_variable(environment, "LOCAL_WORLD_SIZE", 1, world.size));
  } else if (has(environment, "SLURM_NTASKS_PER_NODE") && has(environment, "SLURM_PROCID")) {
    // "4" or "4(x2)": the tasks of the first node.
    const std::string text = environment.at("SLURM_NTASKS_PER_NODE");
    world.local_ranks = std::max(1, std::atoi(text.c_str()));
  }
  if (has(environment, "LOCAL_RANK")) {
    world.local_rank = static_cast<int>(integer_variable(environment, "LOCAL_RANK", 0, world.local_ranks - 1));
  } else if (has(environment, "SLURM_LOCALID")) {
    world.local_rank = static_cast<int>(integer_variable(environment, "SLURM_LOCALID", 0, world.local_ranks - 1));
  } else {
    world.local_rank = world.rank % world.local_ranks;
  }
  if (world.size == 1) return std::nullopt;
  return world;
}

CollectiveBackend collective_backend(c10::Device device) {
  return device.is_cuda() ? CollectiveBackend::nccl : CollectiveBackend::gloo;
}

const char* to_string(CollectiveBackend backend) { return backend == CollectiveBackend::nccl ? "nccl" : "gloo"; }

c10::Device rank_device(c10::Device chosen, bool explicit_index, const WorldSettings& world, int gpus) {
  if (!chosen.is_cuda() || world.local_ranks == 1) return chosen;
  if (explicit_index) {
    throw ConfigError(fmt::format("run.device = \"cuda:{}\" would put all {} ranks of this host on one GPU, which "
                                  "NCCL refuses: use \"cuda\" (one GPU a rank)",
                                  chosen.index(), world.local_ranks));
  }
  if (world.local_ranks > gpus) {
    throw ConfigError(fmt::format("{} data-parallel ranks on this host but {} GPU{}: one GPU a rank (fewer ranks, or "
                                  "run.device = \"cpu\")",
                                  world.local_ranks, gpus, gpus == 1 ? "" : "s"));
  }
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(world.local_rank));
}

struct DataParallel::Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> processes;  // CPU tensors (and CUDA ones without NCCL)
  c10::intrusive_ptr<c10d::Backend> nccl;                // CUDA tensors, when training on a GPU

  c10d::Backend& for_tensor(const at::Tensor& tensor) const {
    if (tensor.is_cuda() && nccl) return *nccl;
    return *processes;
  }
};

namespace {

// Runs one collective, turning Gloo's and c10d's exceptions into one line with context.
template <typename Operation>
void collective(const char* what, const WorldSettings& world, Operation&& operation) {
  try {
    operation();
  } catch (const std::exception& e) {
    std::string reason = e.what();
    // c10 errors carry a C++ backtrace after the first line; keep the message.
    if (const auto newline = reason.find('\n'); newline != std::string::npos) reason.resize(newline);
    throw Error(fmt::format("data-parallel {} failed on rank {} of {} (another rank died, hung or left; "
                            "timeout {} s): {}",
                            what, world.rank, world.size, world.timeout.count() / 1000, reason));
  }
}

}  // namespace

DataParallel::DataParallel(const WorldSettings& world, c10::Device device)
    : world_(world), group_(std::make_unique<Group>()) {
  QL_CHECK(world.size >= 1 && world.rank >= 0 && world.rank < world.size, "rank {} is not in a world of {}",
           world.rank, world.size);
  // Ranks start at different times (loading LibTorch and the data): the rendezvous waits
  // longer than a collective.
  const auto start_timeout = std::max<std::chrono::milliseconds>(world.timeout, std::chrono::minutes(5));
  collective("rendezvous", world_, [&] {
    c10d::TCPStoreOptions options;
    options.port = static_cast<std::uint16_t>(world.master_port);
    options.isServer = world.rank == 0;
    options.numWorkers = static_cast<std::size_t>(world.size);
    options.waitWorkers = true;
    options.timeout = start_timeout;
    group_->store = c10::make_intrusive<c10d::TCPStore>(world.master_addr, options);
    auto gloo_options = c10d::ProcessGroupGloo::Options::create(world.timeout);
    if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME"); interface != nullptr && *interface != '\0') {
      gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
    } else if (is_loopback(world.master_addr)) {
      gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    group_->processes = c10::make_intrusive<c10d::ProcessGroupGloo>(group_->store, world.rank, world.size, gloo_options);
    if (collective_backend(device) == CollectiveBackend::nccl) join_nccl(device);
  });
}

void DataParallel::join_nccl(c10::Device device) {
#ifdef USE_C10D_NCCL
  c10::cuda::set_device(device.index());
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = world_.timeout;
  group_->nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(
      c10::make_intrusive<c10d::PrefixStore>("nccl", group_->store), world_.rank, world_.size, options);
#else
  (void)device;  // Gloo carries the CUDA tensors (through host memory)
#endif
}

CollectiveBackend DataParallel::backend() const {
  return group_->nccl ? CollectiveBackend::nccl : CollectiveBackend::gloo;
}

DataParallel::~DataParallel() = default;

void DataParallel::broadcast(const std::vector<at::Tensor>& tensors) {
  collective("broadcast", world_, [&] {
    for (const at::Tensor& tensor : tensors) {
      std::vector<at::Tensor> one{tensor.is_contiguous() ? tensor : tensor.contiguous()};
      group_->for_tensor(tensor).broadcast(one)->wait();
      if (!tensor.is_contiguous()) tensor.copy_(one[0]);
    }
  });
}

std::string DataParallel::broadcast_bytes(const std::string& bytes) {
  at::Tensor length = at::tensor({static_cast<std::int64_t>(bytes.size())}, at::kLong);
  broadcast({length});
  at::Tensor buffer = at::empty({length.item<std::int64_t>()}, at::kByte);
  if (is_root()) std::memcpy(buffer.data_ptr(), bytes.data(), bytes.size());
  if (buffer.numel() > 0) broadcast({buffer});
  return std::string(static_cast<const char*>(buffer.data_ptr()), static_cast<std::size_t>(buffer.numel()));
}

void DataParallel::all_reduce_sum(const std::vector<at::Tensor>& tensors, std::int64_t bucket_bytes) {
  // Buckets of same-dtype tensors, flattened into one buffer each, all reduced together.
  std::vector<std::vector<at::Tensor>> buckets;
  std::int64_t filled = 0;
  for (const at::Tensor& tensor : tensors) {
    const std::int64_t bytes = tensor.numel() * static_cast<std::int64_t>(tensor.element_size());
    if (buckets.empty() || filled + bytes > bucket_bytes || buckets.back().front().scalar_type() != tensor.scalar_type()) {
      buckets.emplace_back();
      filled = 0;
    }
    buckets.back().push_back(tensor);
    filled += bytes;
  }
  std::vector<at::Tensor> flats;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  collective("gradient all-reduce", world_, [&] {
    for (const auto& bucket : buckets) {
      std::vector<at::Tensor> parts;
      for (const at::Tensor& tensor : bucket) parts.push_back(tensor.reshape({-1}));
      flats.push_back(at::cat(parts));
      std::vector<at::Tensor> one{flats.back()};
      works.push_back(group_->for_tensor(flats.back()).allreduce(one));
    }
    for (auto& work : works) work->wait();
  });
  for (std::size_t b = 0; b < buckets.size(); ++b) {
    std::int64_t offset = 0;
    for (const at::Tensor& tensor : buckets[b]) {
      tensor.copy_(flats[b].slice(0, offset, offset + tensor.numel()).view(tensor.sizes()));
      offset += tensor.numel();
    }
  }
}

void DataParallel::all_reduce_sum(std::vector<double>& values) {
  if (values.empty()) return;
  at::Tensor buffer = at::tensor(values, at::kDouble);
  collective("all-reduce", world_, [&] {
    std::vector<at::Tensor> one{buffer};
    group_->processes->allreduce(one)->wait();
  });
  std::memcpy(values.data(), buffer.data_ptr<double>(), values.size() * sizeof(double));
}

std::vector<at::Tensor> DataParallel::all_gather(const at::Tensor& tensor) {
  std::vector<std::vector<at::Tensor>> outputs(1);
  for (int r = 0; r < world_.size; ++r) outputs[0].push_back(at::empty_like(tensor));
  std::vector<at::Tensor> input{tensor.contiguous()};
  collective("all-gather", world_, [&] { group_->for_tensor(tensor).allgather(outputs, input)->wait(); });
  return outputs[0];
}

std::vector<std::vector<std::uint8_t>> DataParallel::all_gather(const std::vector<std::uint8_t>& bytes) {
  const std::vector<at::Tensor> lengths = all_gather(at::tensor({static_cast<std::int64_t>(bytes.size())}, at::kLong));
  std::int64_t longest = 0;
  for (const at::Tensor& length : lengths) longest = std::max(longest, length.item<std::int64_t>());
  at::Tensor padded = at::zeros({std::max<std::int64_t>(longest, 1)}, at::kByte);
  std::memcpy(padded.data_ptr(), bytes.data(), bytes.size());
  const std::vector<at::Tensor> gathered = all_gather(padded);
  std::vector<std::vector<std::uint8_t>> result;
  for (int r = 0; r < world_.size; ++r) {
    const auto* begin = gathered[static_cast<std::size_t>(r)].data_ptr<std::uint8_t>();
    result.emplace_back(begin, begin + lengths[static_cast<std::size_t>(r)].item<std::int64_t>());
  }
  return result;
}

void DataParallel::barrier() {
  // An all-reduce of one number: it fails, like every other collective here, with the
  // group's timeout and our message.
  std::vector<double> one{0.0};
  all_reduce_sum(one);
}

double ring_all_reduce_bytes(double bytes, int ranks) {
  return ranks > 1 ? 2.0 * (ranks - 1) / ranks * bytes : 0.0;
}

double ring_all_gather_bytes(double bytes, int ranks) { return ranks > 1 ? (ranks - 1) * bytes : 0.0; }

}  // namespace ql::core
