// Batches of a Dataset in a given order, prepared ahead on a background thread (bounded
// queue) while the trainer computes on the previous ones. The thread starts only once making
// a batch costs more than a twentieth of the caller's work per batch (decoding, augmentation):
// for in-memory sets it would only take cores from the training step. It runs at idle
// priority, and the caller makes a batch itself when none is ready, so prefetching uses spare
// CPU and never stalls the step (bench/train_throughput measures this).
//
//   BatchLoader loader(train, epoch_order(train->size(), seed, epoch), 128, seed, 4);
//   while (auto batch = loader.next()) step(*batch);
#pragma once

#include "quantlab/sdk/problem.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace ql::core {

/// A seeded permutation of 0..size-1 for one epoch (the same for the same seed and epoch).
std::vector<std::int64_t> epoch_order(std::int64_t size, std::uint64_t seed, std::int64_t epoch);

/// 0..size-1 in order.
std::vector<std::int64_t> sequential_order(std::int64_t size);

/// One rank's part of `order` when it is cut into global batches of `batch_size` and each
/// batch is split over `ranks`: rank r takes positions [r·n/ranks, (r+1)·n/ranks) of every
/// batch of n samples, so that the ranks' batches (of batch_size / ranks) together are exactly
/// the single-process batches. `batch_size` must be a multiple of `ranks`.
std::vector<std::int64_t> shard_order(const std::vector<std::int64_t>& order, std::int64_t batch_size, int rank,
                                      int ranks, bool drop_last);

/// Derives an independent 64-bit seed from a seed and a stream number (SplitMix64).
std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream);

class BatchLoader {
 public:
  /// Batches of `batch_size` samples of `order`; batch k gets augmentation seed
  /// derive_seed(seed, k) when `augment` is set. `prefetch` batches are prepared ahead (0: on
  /// the caller's thread).
  BatchLoader(std::shared_ptr<const Dataset> dataset, std::vector<std::int64_t> order,
              std::int64_t batch_size, std::uint64_t seed, bool augment, std::size_t prefetch,
              bool drop_last = false);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  /// Makes batches in page-locked memory, so that copies to a GPU overlap its compute
  /// (needs a CUDA build with a device present).
  void pin_memory(bool pin) { pin_ = pin; }
  /// Starts at batch `first` instead of 0 (a resumed epoch); call before the first next().
  void start_at(std::int64_t first);
  /// The next batch, or nothing after the last. Rethrows a failure of the loader thread.
  std::optional<Batch> next();
  std::int64_t batches() const { return batches_; }
  /// True once the background thread has started.
  bool prefetching() const { return worker_.joinable(); }

 private:
  Batch make(std::int64_t index) const;
  Batch make_here(std::int64_t index);
  void produce();

  std::shared_ptr<const Dataset> dataset_;
  at::Tensor order_;
  std::int64_t batch_size_;
  std::uint64_t seed_;
  bool augment_;
  std::size_t prefetch_;
  bool pin_ = false;
  std::int64_t batches_;
  std::int64_t consumed_ = 0;
  std::chrono::steady_clock::time_point returned_;  // when next() last returned
  int slow_batches_ = 0;                            // expensive batches in a row

  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::int64_t, Batch> ready_;  // made but not yet taken, by batch number
  std::int64_t next_claim_ = 0;          // batches below this are made or being made
  std::exception_ptr failure_;
  bool stop_ = false;
  std::thread worker_;
};

}  // namespace ql::core
