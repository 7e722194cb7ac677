#include "quantlab/core/unit_export.hpp"

#include "quantlab/core/experiment_config.hpp"
#include "quantlab/core/experiment_store.hpp"
#include "quantlab/core/onnx_export.hpp"
#include "quantlab/core/unit_record.hpp"
#include "quantlab/sdk/error.hpp"
#include "run/checkpoints.hpp"
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
                             const fs::path& unit, const ResultRecord& record, int opset, const fs::path& file) {
  std::vector<nn::QuantizableLayer*> recorded;
  for (const auto& [name, layer] : network.quantizable_layers()) {
    const auto form = record.integer_forms.find(name + ".weight");
    if (form == record.integer_forms.end()) continue;
    layer->set_weight_quantizer(std::make_shared<RecordedIntegerForm>(form->second));
    recorded.push_back(layer.get());
  }
  // The slots are the export's only: they are emptied again however it ends.
  const auto empty_slots = [&] {
    for (nn::QuantizableLayer* layer : recorded) layer->set_weight_quantizer(nullptr);
  };
  const OnnxModelOptions options{
      opset,
      {{"problem", config.problem().name}, {"topology", config.topology().name}, {"unit", unit.filename().string()}},
      record.input_encoding};
  try {
    write_onnx_model(network, spec, file, options);
  } catch (...) {
    empty_slots();
    throw;
  }
  empty_slots();
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
  const fs::path output =
      request.output.empty() ? unit / fmt::format("fold{}", request.fold) / "result.onnx" : request.output;
  run::write_result_model(*network, spec, config, unit, run::read_result_record(archive), request.opset, output);
  return output;
}

}  // namespace ql::core
