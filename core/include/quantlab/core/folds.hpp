// K-fold cross-validation on a training split: a seeded permutation of its samples, fold k
// validating on positions k, k+K, k+2K, ... of it and training on the others.
//
//   FoldIndices fold = fold_indices(train->size(), 5, 2, seed);
//   auto fold_train = subset(train, fold.train), fold_valid = subset(train, fold.valid);
#pragma once

#include "quantlab/sdk/problem.hpp"

#include <cstdint>
#include <memory>
#include <vector>

namespace ql::core {

struct FoldIndices {
  std::vector<std::int64_t> train;  ///< increasing
  std::vector<std::int64_t> valid;  ///< increasing
};

/// Fold `k` of `folds` over `size` samples; throws ql::ConfigError when a fold would be empty.
FoldIndices fold_indices(std::int64_t size, std::int64_t folds, std::int64_t k, std::uint64_t seed);

/// The samples `indices` of `dataset` as a dataset of their own (augmentation included).
std::shared_ptr<const Dataset> subset(std::shared_ptr<const Dataset> dataset, std::vector<std::int64_t> indices);

}  // namespace ql::core
