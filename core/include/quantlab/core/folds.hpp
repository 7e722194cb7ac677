// The host's cuts of a training split: the validation hold-out (a seeded permutation whose last
// share validates, the same for every problem) and K-fold cross-validation (fold k validating
// on positions k, k+K, k+2K, ... of a seeded permutation and training on the others).
//
//   FoldIndices split = hold_out_indices(train->size(), 0.1, 1234);
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

/// The last floor(size · fraction) positions of seeded_permutation(size, seed) validate, the
/// others train.
FoldIndices hold_out_indices(std::int64_t size, double fraction, std::uint64_t seed);
/// Fold `k` of `folds` over `size` samples; throws ql::ConfigError when a fold would be empty.
FoldIndices fold_indices(std::int64_t size, std::int64_t folds, std::int64_t k, std::uint64_t seed);

/// The samples `indices` of `dataset` as a dataset of their own (augmentation included).
std::shared_ptr<const Dataset> subset(std::shared_ptr<const Dataset> dataset, std::vector<std::int64_t> indices);

}  // namespace ql::core
