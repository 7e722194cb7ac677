#include "quantlab/core/folds.hpp"

#include "quantlab/sdk/error.hpp"

#include <torch/types.h>

#include <fmt/format.h>

#include <algorithm>

namespace ql::core {

namespace {

class SubsetDataset : public Dataset {
 public:
  SubsetDataset(std::shared_ptr<const Dataset> dataset, const std::vector<std::int64_t>& indices)
      : dataset_(std::move(dataset)), indices_(torch::tensor(indices, torch::kInt64)) {}
  std::int64_t size() const override { return indices_.size(0); }
  Batch get_batch(const at::Tensor& indices, std::uint64_t seed, bool augment) const override {
    return dataset_->get_batch(indices_.index_select(0, indices), seed, augment);
  }
  std::optional<InputEncoding> input_encoding() const override { return dataset_->input_encoding(); }

 private:
  std::shared_ptr<const Dataset> dataset_;
  at::Tensor indices_;
};

}  // namespace

FoldIndices hold_out_indices(std::int64_t size, double fraction, std::uint64_t seed) {
  const std::vector<std::int64_t> order = seeded_permutation(size, seed);
  const auto n_valid = static_cast<std::int64_t>(static_cast<double>(size) * fraction);
  FoldIndices split;
  split.train.assign(order.begin(), order.end() - n_valid);
  split.valid.assign(order.end() - n_valid, order.end());
  std::sort(split.train.begin(), split.train.end());
  std::sort(split.valid.begin(), split.valid.end());
  return split;
}

FoldIndices fold_indices(std::int64_t size, std::int64_t folds, std::int64_t k, std::uint64_t seed) {
  if (folds < 2 || folds > size) {
    throw ConfigError(fmt::format("training.folds = {} needs 2 <= folds <= the {} training samples", folds, size));
  }
  QL_CHECK(k >= 0 && k < folds, "fold {} of {}", k, folds);
  const std::vector<std::int64_t> order = seeded_permutation(size, seed);
  FoldIndices fold;
  for (std::int64_t i = 0; i < size; ++i) {
    (i % folds == k ? fold.valid : fold.train).push_back(order[static_cast<std::size_t>(i)]);
  }
  std::sort(fold.train.begin(), fold.train.end());
  std::sort(fold.valid.begin(), fold.valid.end());
  return fold;
}

std::shared_ptr<const Dataset> subset(std::shared_ptr<const Dataset> dataset, std::vector<std::int64_t> indices) {
  return std::make_shared<SubsetDataset>(std::move(dataset), indices);
}

}  // namespace ql::core
