// The data-parallel layer: launcher variables, the distributed sampler, and the collectives of
// two real ranks (two threads of this process over Gloo on loopback).
#include "quantlab/core/batch_loader.hpp"
#include "quantlab/core/data_parallel.hpp"
#include "quantlab/core/local_launcher.hpp"
#include "quantlab/sdk/error.hpp"

#include <gtest/gtest.h>

#include <torch/types.h>

#include <algorithm>
#include <future>
#include <numeric>

namespace {

using ql::core::DataParallel;
using ql::core::WorldSettings;

TEST(WorldSettings, ReadsTorchrunVariables) {
  const auto world = WorldSettings::from_environment(
      {{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "node7"}, {"MASTER_PORT", "1234"},
       {"LOCAL_WORLD_SIZE", "2"}, {"QL_DIST_TIMEOUT_S", "9"}});
  ASSERT_TRUE(world.has_value());
  EXPECT_EQ(world->rank, 1);
  EXPECT_EQ(world->size, 4);
  EXPECT_EQ(world->master_addr, "node7");
  EXPECT_EQ(world->master_port, 1234);
  EXPECT_EQ(world->local_ranks, 2);
  EXPECT_EQ(world->local_rank, 1);  // rank mod local ranks, without LOCAL_RANK
  EXPECT_EQ(world->timeout, std::chrono::seconds(9));
  EXPECT_EQ(WorldSettings::from_environment({{"RANK", "2"}, {"WORLD_SIZE", "4"}, {"LOCAL_WORLD_SIZE", "4"},
                                             {"LOCAL_RANK", "3"}})->local_rank, 3);
}

// bad-input: data-parallel ranks on GPUs that do not fit the host (3 ranks on 2 GPUs, every rank on an explicit `cuda:1`) | `3 data-parallel ranks on this host but 2 GPUs: one GPU a rank …`; `run.device = "cuda:1" would put all 2 ranks of this host on one GPU, which NCCL refuses …` | 2
TEST(WorldSettings, EachRankTakesItsOwnGpuAndCudaTensorsTravelOverNccl) {
  using ql::core::CollectiveBackend;
  using ql::core::rank_device;
  EXPECT_EQ(ql::core::collective_backend(c10::kCPU), CollectiveBackend::gloo);
  EXPECT_EQ(ql::core::collective_backend(c10::Device(c10::kCUDA, 1)), CollectiveBackend::nccl);
  EXPECT_STREQ(ql::core::to_string(CollectiveBackend::nccl), "nccl");
  WorldSettings world;
  world.size = 4;
  world.local_ranks = 2;
  world.rank = 3;
  world.local_rank = 1;
  const c10::Device cuda(c10::kCUDA, 0);
  EXPECT_EQ(rank_device(cuda, false, world, 2), c10::Device(c10::kCUDA, 1));
  EXPECT_EQ(rank_device(c10::kCPU, false, world, 0), c10::Device(c10::kCPU));
  EXPECT_THROW(rank_device(cuda, false, world, 1), ql::ConfigError);
  EXPECT_THROW(rank_device(c10::Device(c10::kCUDA, 1), true, world, 2), ql::ConfigError);
  world.local_ranks = 1;  // one rank a host: the device as chosen
  EXPECT_EQ(rank_device(c10::Device(c10::kCUDA, 1), true, world, 2), c10::Device(c10::kCUDA, 1));
}

TEST(WorldSettings, ReadsSlurmVariablesWithTheFirstHostAsMaster) {
  const auto world = WorldSettings::from_environment(
      {{"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "8"}, {"SLURM_JOB_NODELIST", "gpu[007-008,12],cpu1"},
       {"SLURM_JOB_ID", "123456"}, {"SLURM_NTASKS_PER_NODE", "4(x2)"}});
  ASSERT_TRUE(world.has_value());
  EXPECT_EQ(world->rank, 3);
  EXPECT_EQ(world->size, 8);
  EXPECT_EQ(world->master_addr, "gpu007");
  EXPECT_EQ(world->master_port, 20000 + 123456 % 20000);
  EXPECT_EQ(world->local_ranks, 4);
  EXPECT_EQ(ql::core::first_slurm_host("a,b"), "a");
  EXPECT_EQ(ql::core::first_slurm_host("single"), "single");
}

// bad-input: launcher variables that do not fit (`RANK=2 WORLD_SIZE=2`, `RANK` alone, `WORLD_SIZE=two`, `MASTER_PORT=70000`) | `environment variable RANK=2: expected an integer in [0, 1]` and the like | 2
TEST(WorldSettings, NoLauncherOrOneRankMeansNoWorldAndBadValuesAreRefused) {
  EXPECT_FALSE(WorldSettings::from_environment(std::map<std::string, std::string>{}).has_value());
  EXPECT_FALSE(WorldSettings::from_environment({{"RANK", "0"}, {"WORLD_SIZE", "1"}}).has_value());
  EXPECT_THROW(WorldSettings::from_environment({{"RANK", "2"}, {"WORLD_SIZE", "2"}}), ql::ConfigError);
  EXPECT_THROW(WorldSettings::from_environment({{"RANK", "0"}}), ql::ConfigError);
  EXPECT_THROW(WorldSettings::from_environment({{"RANK", "0"}, {"WORLD_SIZE", "two"}}), ql::ConfigError);
  EXPECT_THROW(WorldSettings::from_environment({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "70000"}}),
               ql::ConfigError);
}

TEST(ShardOrder, RanksSplitEveryGlobalBatchIntoTheSingleProcessBatches) {
  std::vector<std::int64_t> order(103);
  std::iota(order.begin(), order.end(), 1000);
  const std::int64_t batch = 12;
  const int ranks = 3;
  std::vector<std::vector<std::int64_t>> shards;
  for (int r = 0; r < ranks; ++r) shards.push_back(ql::core::shard_order(order, batch, r, ranks, false));
  // Local batches of batch/ranks: the k-th local batches of all ranks, in rank order, are the
  // k-th global batch.
  const std::int64_t local = batch / ranks;
  const std::int64_t steps = (103 + batch - 1) / batch;
  std::vector<std::int64_t> joined;
  for (std::int64_t k = 0; k < steps; ++k) {
    for (int r = 0; r < ranks; ++r) {
      const auto& shard = shards[static_cast<std::size_t>(r)];
      const auto begin = std::min<std::int64_t>(k * local, static_cast<std::int64_t>(shard.size()));
      const auto end = std::min<std::int64_t>(begin + local, static_cast<std::int64_t>(shard.size()));
      joined.insert(joined.end(), shard.begin() + begin, shard.begin() + end);
    }
  }
  EXPECT_EQ(joined, order);
  // The last global batch (7 samples) is split 2/2/3.
  EXPECT_EQ(shards[0].size(), 8u * 4 + 2);
  EXPECT_EQ(shards[2].size(), 8u * 4 + 3);
  // drop_last drops the partial global batch on every rank; uneven splits are refused.
  EXPECT_EQ(ql::core::shard_order(order, batch, 1, ranks, true).size(), 8u * 4);
  EXPECT_THROW(ql::core::shard_order(order, 10, 0, 3, false), ql::Error);
}

// Runs `body(group)` on two ranks (threads) of a fresh group and returns both results.
template <typename Body>
auto on_two_ranks(Body body) {
  const int port = ql::core::free_local_port();
  auto rank = [&](int r) {
    WorldSettings world;
    world.rank = r;
    world.size = 2;
    world.master_port = port;
    world.timeout = std::chrono::seconds(20);
    DataParallel group(world);
    return body(group);
  };
  auto other = std::async(std::launch::async, rank, 1);
  auto mine = rank(0);
  return std::make_pair(mine, other.get());
}

TEST(DataParallel, CpuRanksUseGlooForEverything) {
  const auto [a, b] = on_two_ranks([](DataParallel& group) { return group.backend(); });
  EXPECT_EQ(a, ql::core::CollectiveBackend::gloo);
  EXPECT_EQ(b, ql::core::CollectiveBackend::gloo);
}

TEST(DataParallel, BucketedAllReduceSumsEveryTensorAcrossBuckets) {
  const auto [a, b] = on_two_ranks([](DataParallel& group) {
    const double r = group.rank() + 1;
    std::vector<at::Tensor> tensors{torch::full({3, 5}, r), torch::arange(10, torch::kFloat32) * r,
                                    torch::full({7}, 2 * r)};
    group.all_reduce_sum(tensors, /*bucket_bytes=*/48);  // several buckets
    return tensors;
  });
  EXPECT_TRUE(torch::equal(a[0], torch::full({3, 5}, 3.0f)));
  EXPECT_TRUE(torch::equal(a[1], torch::arange(10, torch::kFloat32) * 3));
  EXPECT_TRUE(torch::equal(a[2], torch::full({7}, 6.0f)));
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i]));
}

TEST(DataParallel, BroadcastsAndGathersBytesOfDifferentLengths) {
  const auto [a, b] = on_two_ranks([](DataParallel& group) {
    const std::string from_root = group.broadcast_bytes(group.is_root() ? std::string("rank zero's \0 bytes", 19) : "");
    std::vector<std::uint8_t> mine(static_cast<std::size_t>(3 + 4 * group.rank()), static_cast<std::uint8_t>(group.rank() + 7));
    at::Tensor weights = group.is_root() ? torch::arange(4, torch::kFloat32).view({2, 2}) : torch::zeros({2, 2}).t();
    group.broadcast({weights});
    std::vector<double> counts{1.0 * group.rank(), 2.0};
    group.all_reduce_sum(counts);
    return std::make_tuple(from_root, group.all_gather(mine), weights.contiguous().view({-1}), counts);
  });
  EXPECT_EQ(std::get<0>(a), std::string("rank zero's \0 bytes", 19));
  EXPECT_EQ(std::get<0>(b), std::get<0>(a));
  const auto gathered = std::get<1>(b);
  ASSERT_EQ(gathered.size(), 2u);
  EXPECT_EQ(gathered[0], std::vector<std::uint8_t>(3, 7));
  EXPECT_EQ(gathered[1], std::vector<std::uint8_t>(7, 8));
  EXPECT_EQ(std::get<1>(a), gathered);
  EXPECT_TRUE(torch::equal(std::get<2>(b), torch::arange(4, torch::kFloat32)));  // into a non-contiguous tensor
  EXPECT_EQ(std::get<3>(b), (std::vector<double>{1.0, 4.0}));
}

TEST(DataParallel, ACollectiveWhosePeerLeftFailsWithinTheTimeoutAndSaysWhere) {
  const auto started = std::chrono::steady_clock::now();
  const auto [a, b] = on_two_ranks([](DataParallel& group) {
    if (!group.is_root()) return std::string("left");
    try {
      std::vector<double> values{1.0};
      group.all_reduce_sum(values);
    } catch (const ql::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  });
  EXPECT_EQ(b, "left");
  EXPECT_NE(a.find("data-parallel all-reduce failed on rank 0 of 2"), std::string::npos) << a;
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(40));
}

}  // namespace
