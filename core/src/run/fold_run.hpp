// One fold's run, top to bottom: build the network, attach the algorithms, agree with the
// other ranks, resume, fit, evaluate, sweep the variants, post-train and keep the result.
#pragma once

#include "run/experiment.hpp"

#include <cstddef>

namespace ql::core::run {

struct FoldResult {
  Evaluation trained;  ///< the trained float network on the test split (validation without one)
  Evaluation result;   ///< after every algorithm's post-training
};

/// Runs fold `k` of `x` on `data` (the fold's own train/valid cut when there are folds).
FoldResult run_fold(Experiment& x, std::size_t k, const Splits& data);

}  // namespace ql::core::run
