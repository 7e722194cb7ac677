// Data-parallel training across processes on LibTorch's own distributed engine (c10d): a
// TCPStore for the rendezvous, ProcessGroupGloo for CPU tensors and, when the ranks train on
// GPUs, ProcessGroupNCCL for CUDA tensors (one GPU a rank). The c10d headers stay in
// data_parallel.cpp; this header only needs ATen.
//
//   std::optional<WorldSettings> world = WorldSettings::from_environment();  // RANK, WORLD_SIZE, ...
//   DataParallel group(*world);
//   group.broadcast(network.parameters());
//   group.all_reduce_sum(gradients);
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ql::core {

/// Where this process stands in a data-parallel job.
struct WorldSettings {
  int rank = 0;
  int size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  /// Ranks on this host (LOCAL_WORLD_SIZE or SLURM_NTASKS_PER_NODE): they share its cores.
  int local_ranks = 1;
  /// This rank's number on its host (LOCAL_RANK or SLURM_LOCALID; else rank mod local_ranks):
  /// which of the host's GPUs it takes.
  int local_rank = 0;
  /// How long a collective may wait for the other ranks before failing (a dead rank).
  std::chrono::milliseconds timeout{60'000};

  /// From torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) or, failing those,
  /// Slurm's (SLURM_PROCID, SLURM_NTASKS, the first host of SLURM_JOB_NODELIST, port from
  /// MASTER_PORT or derived from SLURM_JOB_ID). QL_DIST_TIMEOUT_S overrides the timeout.
  /// Nothing when neither is set or the world has one rank. Throws ql::ConfigError on values
  /// that do not parse or do not fit together.
  static std::optional<WorldSettings> from_environment();
  static std::optional<WorldSettings> from_environment(const std::map<std::string, std::string>& environment);
};

/// The library that carries collectives on tensors of a device: NCCL for CUDA, Gloo otherwise.
enum class CollectiveBackend { gloo, nccl };
CollectiveBackend collective_backend(c10::Device device);
const char* to_string(CollectiveBackend backend);

/// The device one rank trains on when [run] device chose `chosen` ("cuda"/"auto" resolve to
/// cuda:0): with several ranks on a host, "cuda" means one GPU a rank, cuda:local_rank. Throws
/// ql::ConfigError when the host has fewer GPUs than ranks, or when an explicit cuda:N would
/// put several ranks on one GPU (NCCL refuses that). `explicit_index`: the device was cuda:N.
c10::Device rank_device(c10::Device chosen, bool explicit_index, const WorldSettings& world, int gpus);

/// The first host of a Slurm node list ("node[03-05,7],gpu1" -> "node03").
std::string first_slurm_host(const std::string& node_list);

/// One rank's view of the process group. Every collective must be called by every rank in the
/// same order; a rank that has died or stopped calling makes the others throw ql::Error
/// (naming the operation) within the timeout instead of hanging.
class DataParallel {
 public:
  /// Joins the group; `device` is where this rank trains (a CUDA device adds an NCCL group).
  explicit DataParallel(const WorldSettings& world, c10::Device device = c10::kCPU);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  int rank() const { return world_.rank; }
  int size() const { return world_.size; }
  bool is_root() const { return world_.rank == 0; }

  /// The backend that carries tensors of this rank's training device.
  CollectiveBackend backend() const;
  /// Rank 0's values into every rank's tensors (in place; CPU or the group's device).
  void broadcast(const std::vector<at::Tensor>& tensors);
  /// Rank 0's bytes on every rank.
  std::string broadcast_bytes(const std::string& bytes);
  /// Sums `tensors` over the ranks in place, packed into flat buckets of at most `bucket_bytes`
  /// (as DDP does) so that one collective carries many small tensors.
  void all_reduce_sum(const std::vector<at::Tensor>& tensors, std::int64_t bucket_bytes = 25 << 20);
  /// Sums plain numbers over the ranks (counts, loss sums).
  void all_reduce_sum(std::vector<double>& values);
  /// Every rank's byte string, by rank. The strings may differ in length.
  std::vector<std::vector<std::uint8_t>> all_gather(const std::vector<std::uint8_t>& bytes);
  /// Every rank's tensor (same shape on all ranks), by rank.
  std::vector<at::Tensor> all_gather(const at::Tensor& tensor);
  void barrier();

 private:
  struct Group;
  void join_nccl(c10::Device device);
  WorldSettings world_;
  std::unique_ptr<Group> group_;
};

/// Bytes one rank sends in a ring all-reduce of a `bytes`-long buffer over `ranks`
/// (reduce-scatter then all-gather: 2 (ranks-1)/ranks of the buffer) and in a ring all-gather
/// of `bytes`-long contributions (ranks-1 of them: its own and the ones it forwards).
double ring_all_reduce_bytes(double bytes, int ranks);
double ring_all_gather_bytes(double bytes, int ranks);

}  // namespace ql::core
