#include "quantlab/core/network_summary.hpp"

#include <fmt/format.h>
#include <torch/types.h>

#include <map>

namespace ql::core {

namespace {

// Passes values through unchanged and remembers their shape: it fills each quantisable
// layer's output slot for one forward pass, standing in for the forward hooks LibTorch's C++
// modules do not have.
class ShapeRecorder : public Quantizer {
 public:
  at::Tensor forward(const at::Tensor& x) override {
    shape = fmt::format("[{}]", fmt::join(x.sizes(), ", "));
    return x;
  }
  std::string shape;
};

std::string with_commas(std::int64_t n) {
  std::string digits = std::to_string(n), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

}  // namespace

std::string summarize_network(Network& network, const DatasetSpec& spec) {
  const auto layers = network.quantizable_layers();
  std::map<const torch::nn::Module*, std::shared_ptr<ShapeRecorder>> recorders;
  std::vector<std::shared_ptr<Quantizer>> saved;
  for (const auto& [name, layer] : layers) {
    auto recorder = std::make_shared<ShapeRecorder>();
    recorders[layer.get()] = recorder;
    saved.push_back(layer->output_quantizer());
    layer->set_output_quantizer(recorder);
  }
  std::vector<std::int64_t> shape{1};
  shape.insert(shape.end(), spec.input_shape.begin(), spec.input_shape.end());
  const bool was_training = network.is_training();
  network.eval();
  std::string output_shape;
  {
    torch::NoGradGuard no_grad;
    const at::Tensor input = spec.input_kind == InputKind::tokens ? torch::ones(shape, torch::kInt64) : torch::zeros(shape);
    const at::Tensor output = network.apply(input);
    output_shape = fmt::format("[{}]", fmt::join(output.sizes(), ", "));
  }
  network.train(was_training);
  for (std::size_t i = 0; i < layers.size(); ++i) layers[i].second->set_output_quantizer(saved[i]);

  std::string table = fmt::format("{:<36} {:<28} {:<20} {:>13}  {}\n", "layer", "type", "output shape",
                                  "parameters", "quantisable");
  std::int64_t total = 0, quantisable_parameters = 0, quantisable_layers = 0;
  for (const auto& item : network.named_modules("", /*include_self=*/false)) {
    const auto& module = item.value();
    if (!module->children().empty()) continue;  // containers: their leaves are listed
    std::int64_t count = 0;
    for (const auto& p : module->parameters(/*recurse=*/false)) count += p.numel();
    total += count;
    auto recorder = recorders.find(module.get());
    const bool quantisable = recorder != recorders.end();
    std::string type = module->name();
    if (quantisable) {
      type = "ql::nn::" + std::string(nn::to_string(static_cast<const nn::QuantizableLayer&>(*module).kind()));
      quantisable_parameters += count;
      ++quantisable_layers;
    } else if (type.rfind("torch::nn::", 0) == 0 && type.size() > 15 && type.substr(type.size() - 4) == "Impl") {
      type = type.substr(0, type.size() - 4);
    }
    table += fmt::format("{:<36} {:<28} {:<20} {:>13}  {}\n", item.key(), type,
                         quantisable ? recorder->second->shape : "-", with_commas(count), quantisable ? "yes" : "no");
  }
  table += fmt::format("input [1, {}] -> output {}\n", fmt::join(spec.input_shape, ", "), output_shape);
  table += fmt::format("total parameters {}; {} quantisable layers hold {} ({:.2f} %)\n", with_commas(total),
                       quantisable_layers, with_commas(quantisable_parameters),
                       total > 0 ? 100.0 * static_cast<double>(quantisable_parameters) / static_cast<double>(total) : 0.0);
  return table;
}

}  // namespace ql::core
