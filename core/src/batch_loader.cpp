#include "quantlab/core/batch_loader.hpp"

#include "quantlab/sdk/error.hpp"

#include <ATen/Parallel.h>
#include <torch/types.h>

#include <numeric>
#include <pthread.h>
#include <sched.h>
#include <random>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ql::core {

std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream) {
  std::uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (stream + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::vector<std::int64_t> sequential_order(std::int64_t size) {
  std::vector<std::int64_t> order(static_cast<std::size_t>(size));
  std::iota(order.begin(), order.end(), 0);
  return order;
}

std::vector<std::int64_t> shard_order(const std::vector<std::int64_t>& order, std::int64_t batch_size, int rank,
                                      int ranks, bool drop_last) {
  QL_CHECK(ranks >= 1 && rank >= 0 && rank < ranks, "rank {} is not one of {}", rank, ranks);
  QL_CHECK(batch_size % ranks == 0, "the batch size {} does not split evenly over {} ranks", batch_size, ranks);
  const auto total = static_cast<std::int64_t>(order.size());
  const std::int64_t usable = drop_last ? total / batch_size * batch_size : total;
  std::vector<std::int64_t> shard;
  shard.reserve(static_cast<std::size_t>(usable / ranks + batch_size));
  for (std::int64_t begin = 0; begin < usable; begin += batch_size) {
    const std::int64_t n = std::min(batch_size, usable - begin);
    for (std::int64_t i = begin + rank * n / ranks; i < begin + (rank + 1) * n / ranks; ++i) {
      shard.push_back(order[static_cast<std::size_t>(i)]);
    }
  }
  return shard;
}

std::vector<std::int64_t> epoch_order(std::int64_t size, std::uint64_t seed, std::int64_t epoch) {
  return seeded_permutation(size, derive_seed(seed, static_cast<std::uint64_t>(epoch)));
}

BatchLoader::BatchLoader(std::shared_ptr<const Dataset> dataset, std::vector<std::int64_t> order,
                         std::int64_t batch_size, std::uint64_t seed, bool augment,
                         std::size_t prefetch, bool drop_last)
    : dataset_(std::move(dataset)),
      order_(torch::tensor(order, torch::kInt64)),
      batch_size_(batch_size),
      seed_(seed),
      augment_(augment),
      prefetch_(prefetch) {
  const auto samples = static_cast<std::int64_t>(order.size());
  batches_ = drop_last ? samples / batch_size_ : (samples + batch_size_ - 1) / batch_size_;
}

BatchLoader::~BatchLoader() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  if (worker_.joinable()) worker_.join();
}

Batch BatchLoader::make(std::int64_t index) const {
  const std::int64_t begin = index * batch_size_;
  const std::int64_t end = std::min(begin + batch_size_, order_.size(0));
  Batch batch = dataset_->get_batch(order_.slice(0, begin, end), derive_seed(seed_, static_cast<std::uint64_t>(index)),
                                    augment_);
  if (pin_) {
    batch.inputs = batch.inputs.pin_memory();
    batch.targets = batch.targets.pin_memory();
  }
  return batch;
}

void BatchLoader::produce() {
  // Idle priority: this thread runs only on CPU time the training step leaves free. A
  // normal-priority loader preempts LibTorch's compute threads at every batch (on 2 cores:
  // 0.61 of the plain-loop ceiling; at idle priority with caller-side production: 0.98+).
  sched_param idle{};
  pthread_setschedparam(pthread_self(), SCHED_IDLE, &idle);
  // Its own tensor ops stay on this one thread. Were it to start an OpenMP team, libgomp would
  // count more threads than cores and stop spin-waiting in every team, so each parallel op of
  // the training step would sleep and wake its threads (0.61 of the ceiling, 120k context
  // switches in 4 epochs). ATen initialises a thread's OpenMP count lazily from the global
  // setting on its first query, so query first, then narrow this thread to one.
  (void)at::get_num_threads();
#ifdef _OPENMP
  omp_set_num_threads(1);
#endif
  bool filling = true;
  while (true) {
    std::int64_t index = 0;
    {
      std::unique_lock lock(mutex_);
      // Fill the queue, then sleep until it is half empty: one wake-up per prefetch/2 batches
      // rather than one per batch.
      if (ready_.size() >= prefetch_) filling = false;
      changed_.wait(lock, [&] {
        if (!filling && ready_.size() <= prefetch_ / 2) filling = true;
        return stop_ || next_claim_ >= batches_ || (filling && ready_.size() < prefetch_);
      });
      if (stop_ || next_claim_ >= batches_) return;
      index = next_claim_++;
    }
    try {
      Batch batch = make(index);
      std::lock_guard lock(mutex_);
      ready_.emplace(index, std::move(batch));
    } catch (...) {
      std::lock_guard lock(mutex_);
      failure_ = std::current_exception();
      stop_ = true;
    }
    changed_.notify_all();
  }
}

Batch BatchLoader::make_here(std::int64_t index) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  Batch batch = make(index);
  const auto made = Clock::now();
  // The caller's work per batch is the time since next() last returned. Three expensive
  // batches in a row start the thread; a single one may be a hiccup of a busy machine.
  if (prefetch_ > 0 && !worker_.joinable() && index > 0) {
    slow_batches_ = (made - start) * 20 > start - returned_ ? slow_batches_ + 1 : 0;
    if (slow_batches_ >= 3) worker_ = std::thread([this] { produce(); });
  }
  return batch;
}

void BatchLoader::start_at(std::int64_t first) {
  std::lock_guard lock(mutex_);
  QL_CHECK(consumed_ == 0 && next_claim_ == 0, "BatchLoader::start_at after the first batch");
  consumed_ = next_claim_ = std::clamp<std::int64_t>(first, 0, batches_);
}

std::optional<Batch> BatchLoader::next() {
  if (consumed_ >= batches_) return std::nullopt;
  const std::int64_t wanted = consumed_++;
  std::optional<Batch> batch;
  std::unique_lock lock(mutex_);
  if (next_claim_ == wanted && !failure_) {
    // Nothing made ahead: make it here rather than wait for the idle-priority thread.
    ++next_claim_;
    lock.unlock();
    changed_.notify_all();
    batch = make_here(wanted);
  } else {
    changed_.wait(lock, [&] { return ready_.count(wanted) > 0 || failure_; });
    auto found = ready_.find(wanted);
    if (found == ready_.end()) std::rethrow_exception(failure_);
    batch = std::move(found->second);
    ready_.erase(found);
    lock.unlock();
    changed_.notify_all();
  }
  returned_ = std::chrono::steady_clock::now();
  return batch;
}

}  // namespace ql::core
