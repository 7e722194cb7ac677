#include "quantlab/core/unit_export.hpp"

#include "quantlab/core/experiment_config.hpp"
#include "quantlab/core/experiment_store.hpp"
#include "quantlab/core/onnx_export.hpp"
#include "quantlab/core/unit_record.hpp"
#include "quantlab/sdk/error.hpp"
#include "run/checkpoints.hpp"
#include "run/quantized_h5.hpp"
#include "run/result_model.hpp"

#include <torch/serialize/input-archive.h>
#include <torch/types.h>

#include <fmt/format.h>

namespace ql::core {

namespace fs = std::filesystem;

namespace {

// A weight already holding its quantised values, with the integer form the run recorded.
class RecordedIntegerForm : public Quantizer {
 public:
  explicit RecordedIntegerForm(IntegerForm form) : form_(std::move(form)) {}
  at::Tensor forward(const at::Tensor& x) override { return x; }
  std::optional<IntegerForm> integer_form(const at::Tensor&) override { return form_; }
  std::string describe() const override { return "recorded integer form"; }

 private:
  IntegerForm form_;
};

// A quantised activation as the run recorded it: its description and, where it had one, its
// affine grid, which forward() computes.
class RecordedActivation : public Quantizer {
 public:
  RecordedActivation(std::string description, std::optional<AffineGrid> grid)
      : description_(std::move(description)), grid_(grid) {}
  // Without a grid the export refuses the layer; until then (a topology may run its layers to
  // learn feature-map sizes) the identity serves.
  at::Tensor forward(const at::Tensor& x) override { return grid_ ? quantize_affine(x, *grid_) : x; }
  std::optional<AffineGrid> affine_grid() const override { return grid_; }
  std::string describe() const override { return description_; }

 private:
  std::string description_;
  std::optional<AffineGrid> grid_;
};

// The network's quantiser slots set from a result record for the export, and put back as they
// were however it ends (the live network of a run keeps its activation quantisers).
class RecordedSlots {
 public:
  RecordedSlots(Network& network, const run::ResultRecord& record) : network_(network), input_(network.input_quantizer()) {
    network.set_input_quantizer(recorded_activation(record, "input"));
    for (const auto& [name, layer] : network.quantizable_layers()) {
      layers_.push_back({layer, layer->weight_quantizer(), layer->output_quantizer()});
      const auto form = record.integer_forms.find(name + ".weight");
      layer->set_weight_quantizer(form == record.integer_forms.end() ? nullptr
                                                                     : std::make_shared<RecordedIntegerForm>(form->second));
      layer->set_output_quantizer(recorded_activation(record, name + ".output"));
    }
  }
  ~RecordedSlots() {
    network_.set_input_quantizer(input_);
    for (auto& [layer, weight, output] : layers_) {
      layer->set_weight_quantizer(weight);
      layer->set_output_quantizer(output);
    }
  }
  RecordedSlots(const RecordedSlots&) = delete;
  RecordedSlots& operator=(const RecordedSlots&) = delete;

 private:
  static std::shared_ptr<Quantizer> recorded_activation(const run::ResultRecord& record, const std::string& name) {
    const auto description = record.quantizers.find(name);
    if (description == record.quantizers.end()) return nullptr;
    const auto grid = record.grids.find(name);
    return std::make_shared<RecordedActivation>(
        description->second, grid == record.grids.end() ? std::nullopt : std::optional<AffineGrid>(grid->second));
  }

  struct Slots {
    std::shared_ptr<nn::QuantizableLayer> layer;
    std::shared_ptr<Quantizer> weight, output;
  };
  Network& network_;
  std::shared_ptr<Quantizer> input_;
  std::vector<Slots> layers_;
};

// The checkpoint whose network is the fold's kept result: result.pt after post-training, or,
// in a unit without algorithms (the trained network is the result), last.pt once it is done.
fs::path result_checkpoint(const fs::path& unit, std::size_t fold, bool has_algorithms) {
  const fs::path dir = unit / fmt::format("fold{}", fold) / "checkpoints";
  if (fs::exists(dir / "result.pt")) return dir / "result.pt";
  const UnitRecord record = read_unit_record(unit);
  QL_CHECK(fold < record.folds.size(), "{} has no fold {} (it has {})", unit.string(), fold, record.folds.size());
  QL_CHECK(!has_algorithms && record.folds[fold].status == "done" && fs::exists(dir / "last.pt"),
           "{} has no result yet: fold {} is {} and {} does not exist", unit.string(), fold,
           record.folds[fold].status, (dir / "result.pt").string());
  return dir / "last.pt";
}

}  // namespace

void run::write_result_model(Network& network, const DatasetSpec& spec, const ExperimentConfig& config,
                             const fs::path& unit, const ResultRecord& record, OnnxModelOptions model,
                             const fs::path& file) {
  const RecordedSlots slots(network, record);
  model.metadata = {
      {"problem", config.problem().name}, {"topology", config.topology().name}, {"unit", unit.filename().string()}};
  model.input_encoding = record.input_encoding;
  write_onnx_model(network, spec, file, model);
}

fs::path export_unit(const UnitExportRequest& request, PluginRegistry& registry) {
  const fs::path& unit = request.unit;
  QL_CHECK(fs::exists(unit / "unit.toml") && fs::exists(unit / "config.toml"),
           "{} is not a results unit (no unit.toml and config.toml)", unit.string());
  const ExperimentConfig config = ExperimentConfig::load(unit / "config.toml", {}, registry);
  const fs::path checkpoint = result_checkpoint(unit, request.fold, !config.algorithms().empty());
  auto problem = registry.create<Problem>(config.problem().name, config.problem().options);
  auto topology = registry.create<Topology>(config.topology().name, config.topology().options);
  const DatasetSpec spec = problem->spec();
  std::shared_ptr<Network> network = topology->build(spec);

  torch::serialize::InputArchive archive;
  load_archive(archive, read_checkpoint(checkpoint));
  try {
    run::read_network(archive, *network);
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", checkpoint.string(), e.what()));
  }
  const bool h5 = request.format == UnitExportFormat::h5;
  const fs::path output = request.output.empty()
                              ? unit / fmt::format("fold{}", request.fold) / (h5 ? "quantized.h5" : "result.onnx")
                              : request.output;
  if (h5) {
    run::write_quantized_h5(output, *network, run::read_result_record(archive), read_text_file(unit / "config.toml"));
  } else {
    run::write_result_model(*network, spec, config, unit, run::read_result_record(archive),
                            {request.opset, request.fold_batch_norm}, output);
  }
  return output;
}

}  // namespace ql::core
