#include "quantlab/core/batch_loader.hpp"

#include <torch/types.h>

#include <numeric>
#include <random>

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

std::vector<std::int64_t> epoch_order(std::int64_t size, std::uint64_t seed, std::int64_t epoch) {
  std::vector<std::int64_t> order = sequential_order(size);
  // Fisher-Yates with an explicit engine and bounded draws: the same order on every platform
  // and standard library, which std::shuffle does not promise.
  std::mt19937_64 engine(derive_seed(seed, static_cast<std::uint64_t>(epoch)));
  for (std::size_t i = order.size(); i > 1; --i) {
    const std::uint64_t j = engine() % i;
    std::swap(order[i - 1], order[j]);
  }
  return order;
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
  if (prefetch_ > 0 && batches_ > 0) worker_ = std::thread([this] { produce(); });
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
  return dataset_->get_batch(order_.slice(0, begin, end), derive_seed(seed_, static_cast<std::uint64_t>(index)),
                             augment_);
}

void BatchLoader::produce() {
  try {
    for (std::int64_t index = 0; index < batches_; ++index) {
      Batch batch = make(index);
      std::unique_lock lock(mutex_);
      changed_.wait(lock, [this] { return stop_ || ready_.size() < prefetch_; });
      if (stop_) return;
      ready_.push_back(std::move(batch));
      changed_.notify_all();
    }
  } catch (...) {
    std::lock_guard lock(mutex_);
    failure_ = std::current_exception();
    changed_.notify_all();
  }
}

std::optional<Batch> BatchLoader::next() {
  if (consumed_ >= batches_) return std::nullopt;
  if (prefetch_ == 0) return make(consumed_++);
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [this] { return !ready_.empty() || failure_; });
  if (ready_.empty()) std::rethrow_exception(failure_);
  Batch batch = std::move(ready_.front());
  ready_.pop_front();
  ++consumed_;
  changed_.notify_all();
  return batch;
}

}  // namespace ql::core
