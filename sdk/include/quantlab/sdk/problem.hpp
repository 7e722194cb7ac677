// Problems are data sets: a DatasetSpec the topology adapts to, and one Dataset per split that
// turns a list of sample indices into a batch (so in-memory sets gather in one index_select).
// Augmentation belongs to the problem. A problem gives its training and test data, and its
// validation split only where the data set defines one; otherwise the host holds out
// [training] valid_fraction of the training split, the same seeded way for every problem.
//
//   class Mnist : public ql::Problem {
//     ql::DatasetSpec spec() const override;
//     std::shared_ptr<const ql::Dataset> dataset(ql::Split split, ql::Log& log) override;
//   };
#pragma once

#include "quantlab/sdk/log.hpp"
#include "quantlab/sdk/plugin.hpp"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ql {

enum class Split { train, valid, test };
std::string_view to_string(Split split);

enum class InputKind { image, tokens };

/// What a sample's target is: a class index (scored by accuracy and cross-entropy-like
/// losses) or a vector of real numbers (scored by the mean squared error).
enum class Task { classification, regression };

/// What a topology needs to know about the data.
struct DatasetSpec {
  Task task = Task::classification;
  InputKind input_kind = InputKind::image;
  /// Shape of one sample: {channels, height, width} for images, {max_length} for tokens;
  /// {features} for a vector of real numbers (an "image" of one dimension).
  std::vector<std::int64_t> input_shape;
  /// Classification: the number of classes. Regression: 0.
  std::int64_t num_classes = 0;
  /// Regression: the length of each sample's target vector. Classification: 0.
  std::int64_t target_size = 0;
  std::vector<std::string> class_names;
  /// Number of distinct token ids, padding included (token inputs only). Id 0 is padding:
  /// sequences shorter than input_shape[0] are filled with 0, which networks mask out.
  std::int64_t vocabulary_size = 0;

  /// The width of the network's output: one logit a class, or one value a target component.
  std::int64_t output_size() const { return task == Task::regression ? target_size : num_classes; }
};

/// Inputs (float images or vectors, or int64 tokens with 0 as padding) and targets: int64
/// class indices [batch], or float vectors [batch, target_size] for regression.
struct Batch {
  at::Tensor inputs;
  at::Tensor targets;
};

/// One step of the arithmetic that turns a raw sample into the network's input, per channel
/// (one value: every channel), in float: input = input − v, input · v or input / v.
struct InputStep {
  enum class Operation { subtract, multiply, divide };
  Operation operation;
  std::vector<float> values;
};

/// How a dataset makes the network's input from a sample as the problem stores it: uint8
/// pixels in the network's layout ([channels, height, width]), cast to float, then `steps` in
/// order. An exported model starts with these steps, so that users feed raw pixels.
struct InputEncoding {
  std::vector<InputStep> steps;
};

class Dataset {
 public:
  virtual ~Dataset();
  /// (optional) The input encoding of the samples outside augmentation, when they are uint8
  /// pixels; nothing when the inputs are no such thing (the export then takes the network's
  /// input as it is).
  virtual std::optional<InputEncoding> input_encoding() const { return std::nullopt; }
  virtual std::int64_t size() const = 0;
  /// The samples at `indices` (int64, 1-D) as one batch. Called from a loader thread, so it
  /// must not change the dataset. When `augment` is true (training batches), `seed` drives
  /// the random augmentation of this batch: the same indices and seed give the same batch.
  virtual Batch get_batch(const at::Tensor& indices, std::uint64_t seed, bool augment) const = 0;
};

/// The splits of a problem, as Problem::dataset hands them out (a missing one is nullptr).
struct Splits {
  std::shared_ptr<const Dataset> train, valid, test;
  std::shared_ptr<const Dataset> of(Split split) const;
};

/// 0..n-1 shuffled by Fisher-Yates with std::mt19937_64(seed) and bounded draws: the same
/// order on every platform and standard library (std::shuffle promises none), for hold-outs.
std::vector<std::int64_t> seeded_permutation(std::int64_t n, std::uint64_t seed);

class Problem {
 public:
  using Interface = Problem;
  static constexpr PluginKind kKind = PluginKind::problem;
  virtual ~Problem();
  /// The spec, from the options alone: it must not need the data files, so that networks can
  /// be built and summarised without them (check the files against it when reading them).
  virtual DatasetSpec spec() const = 0;
  /// The data of `split`, or nullptr when this problem has no such split (most have no
  /// validation split of their own: the host then holds one out of the training data).
  /// Reading the files may wait for the first call, made from the host's main thread; `log`
  /// outlives the datasets, which may warn through it from loader threads.
  virtual std::shared_ptr<const Dataset> dataset(Split split, Log& log) = 0;
  /// Metrics to report (optional): "top1", "top5". Default: top1, plus top5 with more than
  /// five classes; none for regression (the loss is its measure).
  virtual std::vector<std::string> metrics() const;
};

}  // namespace ql
