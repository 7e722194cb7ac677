// The checkpoints of one fold: network, optimiser, position (epoch, batch, step), the epoch's
// running totals, the default generator's state (dropout, ...), the best score so far and
// every algorithm's own state, in fold*/checkpoints/NAME.pt with a checksum trailer.
#pragma once

#include "quantlab/core/trainer.hpp"
#include "quantlab/sdk/problem.hpp"
#include "quantlab/sdk/quantizer.hpp"

#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

namespace ql::core {
class DataParallel;
}

namespace ql::core::run {

class AlgorithmSet;

/// Where training stands: what a checkpoint holds besides the tensors.
struct TrainingPosition {
  std::int64_t epoch = 0;  ///< the epoch in progress (= epochs completed when batch is 0)
  std::int64_t step = 0;   ///< optimiser steps so far
  EpochProgress progress;  ///< of the epoch in progress
  double best_score = -INFINITY;
  std::int64_t best_epoch = 0;
};

/// What the result checkpoint records besides the weights, for export (`qlhost export`): each
/// quantised tensor's quantiser description and integer form, each quantised activation's
/// (a layer's "<layer>.output", the network's "input") description and affine grid, and the
/// input encoding.
struct ResultRecord {
  std::map<std::string, std::string> quantizers;           ///< tensor -> its quantiser's describe()
  std::map<std::string, IntegerForm> integer_forms;        ///< tensor -> its codes and scales
  std::map<std::string, AffineGrid> grids;                 ///< activation -> its grid, where it has one
  std::optional<InputEncoding> input_encoding;
};

/// Copies the checkpoint's "model/<name>" tensors into `network`'s parameters and buffers;
/// throws ql::Error naming a tensor the archive lacks or holds in another shape.
void read_network(torch::serialize::InputArchive& archive, Network& network);

/// The record under the result checkpoint's keys, and back (keys absent: an empty record).
void write_result_record(torch::serialize::OutputArchive& archive, const ResultRecord& record);
ResultRecord read_result_record(torch::serialize::InputArchive& archive);

class FoldCheckpoints {
 public:
  FoldCheckpoints(std::filesystem::path fold_dir, Network& network, torch::optim::Optimizer& optimizer,
                  AlgorithmSet& algorithms);

  std::filesystem::path path(const std::string& name) const;
  /// The checkpoint written last, for messages: "PATH (step N)", or "" before the first.
  const std::string& last_written() const { return last_written_; }

  /// Writes checkpoint `name`; the result checkpoint also holds `record`: "quantizer/<tensor>"
  /// (descriptions), "integer/<tensor>/{codes,scale,zero_point,axis}", "grid/<activation>/
  /// {range,scale,zero_point,low,high,offset,per_sample}" and "input_encoding/...".
  void save(const std::string& name, const TrainingPosition& at, const ResultRecord& record = {});
  /// Checked against its checksum; in data-parallel training rank 0 reads the file and every
  /// rank loads its bytes.
  TrainingPosition load(const std::string& name, DataParallel* world);

 private:
  TrainingPosition load_bytes(const std::filesystem::path& file, const std::string& bytes);

  std::filesystem::path dir_;
  Network& network_;
  torch::optim::Optimizer& optimizer_;
  AlgorithmSet& algorithms_;
  std::string last_written_;
};

}  // namespace ql::core::run
