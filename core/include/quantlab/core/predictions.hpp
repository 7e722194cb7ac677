// What a network predicts for each sample of the final evaluation, kept in the unit as
// fold<k>/predictions.h5 (docs/results.md): for the trained network and for the kept result,
// each sample's label and its best classes with their logits, so that a runtime's or another
// tool's outputs can be compared sample by sample.
//
//   Predictions trained;
//   evaluate(network, loader, device, false, LossKind::cross_entropy, Precision::fp32, &trained);
//   write_predictions_h5(fold_dir / "predictions.h5", "test", {{"trained", trained}});
#pragma once

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace ql::core {

/// One network's predictions, one row per sample in the split's order.
struct Predictions {
  at::Tensor labels;       ///< int64 [samples]
  at::Tensor top_classes;  ///< int64 [samples, k]: the k = min(5, classes) best classes, best first
  at::Tensor top_scores;   ///< float32 [samples, k]: their logits
};

/// Writes `networks` (name, predictions) to `path`, atomically: one group per name holding
/// index [N] (the sample's position in the split), label [N], top_classes [N, k] and
/// top_scores [N, k]; the file's attribute "split" names the split.
void write_predictions_h5(const std::filesystem::path& path, const std::string& split,
                          const std::vector<std::pair<std::string, Predictions>>& networks);

/// The confusion matrix of `predictions` (best class against label) as CSV: a header
/// "label,<class names...>", then one row per label with its counts per predicted class.
std::string confusion_csv(const Predictions& predictions, const std::vector<std::string>& class_names);

}  // namespace ql::core
