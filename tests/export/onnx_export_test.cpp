// ONNX export (docs/export.md): networks written by ql::core::write_onnx_model are accepted by
// the ONNX checker and give LibTorch's logits in onnxruntime (tests/export/check_onnx.py, run
// with the project environment's Python); what cannot be exported is refused by name.
#include "quantlab/core/experiment_config.hpp"
#include "quantlab/core/onnx_export.hpp"
#include "quantlab/core/plugin_registry.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/quantizer.hpp"
#include "support/test_support.hpp"

#include <gtest/gtest.h>
#include <torch/types.h>

#include <fstream>

namespace fs = std::filesystem;

namespace {

// Weights rounded to multiples of 1/64: effective weights that differ from the latent ones.
class GridQuantizer : public ql::Quantizer {
 public:
  at::Tensor forward(const at::Tensor& x) override { return (x * 64).round() / 64; }
  std::string describe() const override { return "grid of 1/64"; }
};

// Symmetric per-output-channel codes of `bits` bits with their integer form, as a uniform
// quantiser has them: codes in [-(2^(b-1) - 1), 2^(b-1) - 1], one scale per channel.
class PerChannelQuantizer : public ql::Quantizer {
 public:
  explicit PerChannelQuantizer(int bits) : top_(static_cast<double>((1 << (bits - 1)) - 1)) {}
  at::Tensor forward(const at::Tensor& w) override {
    const ql::IntegerForm form = *integer_form(w);
    const std::vector<std::int64_t> column{-1, 1, 1, 1};
    return (form.codes.to(torch::kFloat32) * form.scale.view(at::IntArrayRef(column.data(), w.dim()))).to(w.dtype());
  }
  std::optional<ql::IntegerForm> integer_form(const at::Tensor& w) override {
    const std::vector<std::int64_t> column{-1, 1, 1, 1};
    const at::Tensor scale = (w.detach().abs().flatten(1).amax(1) / top_).clamp_min(1e-12).to(torch::kFloat32);
    const at::Tensor codes = (w.detach() / scale.view(at::IntArrayRef(column.data(), w.dim()))).round().to(torch::kInt64);
    return ql::IntegerForm{codes, scale, torch::zeros({scale.numel()}, torch::kInt64), 0};
  }
  std::string describe() const override { return "per-channel codes"; }

 private:
  double top_;
};

void write_raw(const fs::path& path, const at::Tensor& tensor) {
  const at::Tensor values = tensor.contiguous();
  std::ofstream out(path, std::ios::binary);
  out.write(static_cast<const char*>(values.data_ptr()), static_cast<std::streamsize>(values.nbytes()));
}

class OnnxExportTest : public ::testing::Test {
 protected:
  OnnxExportTest() : registry_(std::vector<fs::path>{QL_TEST_PLUGIN_DIR}) {}

  std::shared_ptr<ql::Network> build(const std::string& plugin, const std::vector<std::string>& options,
                                     const ql::DatasetSpec& spec) {
    const auto& metadata = registry_.find(ql::PluginKind::topology, plugin);
    auto network = registry_.create<ql::Topology>(plugin, ql::core::plugin_options(metadata, options))->build(spec);
    // Running statistics that are not the identity, so that batch norm's export shows.
    torch::NoGradGuard no_grad;
    for (auto& buffer : network->named_buffers()) {
      if (buffer.key().find("running_mean") != std::string::npos) buffer.value().normal_(0.0, 0.3);
      if (buffer.key().find("running_var") != std::string::npos) buffer.value().uniform_(0.5, 2.0);
    }
    network->eval();
    return network;
  }

  // Exports `network`, runs the checker and onnxruntime on 6 random samples; returns its report.
  std::string expect_onnxruntime_agrees(ql::Network& network, const ql::DatasetSpec& spec, int opset = 13) {
    std::vector<std::int64_t> shape{6};
    shape.insert(shape.end(), spec.input_shape.begin(), spec.input_shape.end());
    const at::Tensor input = torch::randn(shape);
    const at::Tensor logits = network.apply(input).detach();
    ql::core::write_onnx_model(network, spec, dir_ / "model.onnx", {opset});
    write_raw(dir_ / "input.bin", input);
    write_raw(dir_ / "logits.bin", logits);
    const auto result = ql::test::run_command(
        fmt::format("{} {}/tests/export/check_onnx.py {} {} {} 2>&1", QL_TEST_PYTHON, QL_TEST_SOURCE_DIR,
                    ql::test::quoted((dir_ / "model.onnx").string()), ql::test::quoted((dir_ / "input.bin").string()),
                    ql::test::quoted((dir_ / "logits.bin").string())));
    EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
    std::cout << result.out;
    return result.out;
  }

  static ql::DatasetSpec images(std::vector<std::int64_t> shape, std::int64_t classes) {
    ql::DatasetSpec spec;
    spec.input_shape = std::move(shape);
    spec.num_classes = classes;
    for (std::int64_t c = 0; c < classes; ++c) spec.class_names.push_back(fmt::format("class {}", c));
    return spec;
  }

  ql::test::TempDir dir_;
  ql::core::PluginRegistry registry_;
};

}  // namespace

TEST_F(OnnxExportTest, AnMlpWithBatchNormRunsInOnnxruntimeToTheSameLogits) {
  for (const std::string activation : {"relu", "gelu", "relu6", "leaky_relu", "tanh", "sigmoid", "hardtanh"}) {
    const ql::DatasetSpec spec = images({1, 8, 8}, 10);
    auto network = build("mlp", {"hidden=[32, 16]", "batch_norm=true", "output_batch_norm=true",
                                 fmt::format("activation=\"{}\"", activation)},
                         spec);
    EXPECT_NE(expect_onnxruntime_agrees(*network, spec).find("arg-max agrees on 6/6"), std::string::npos) << activation;
  }
}

TEST_F(OnnxExportTest, ConvNetsAndQuantisedWeightsRunInOnnxruntimeToTheSameLogits) {
  const ql::DatasetSpec cifar = images({3, 16, 16}, 10);
  auto gpfq = build("convnet", {"config=\"gpfq_cifar10\""}, cifar);
  expect_onnxruntime_agrees(*gpfq, cifar);
  const ql::DatasetSpec mnist = images({1, 28, 28}, 10);
  auto quantifind = build("convnet", {"config=\"quantifind_mnist\""}, mnist);
  // The weights as the forward pass uses them: through the weight quantiser.
  const at::Tensor input = torch::randn({4, 1, 28, 28});
  const at::Tensor latent = quantifind->apply(input).detach();
  for (auto& [name, layer] : quantifind->quantizable_layers()) {
    if (layer->has_weight()) layer->set_weight_quantizer(std::make_shared<GridQuantizer>());
  }
  ASSERT_FALSE(torch::allclose(quantifind->apply(input), latent, 1e-4, 1e-4)) << "the quantiser changes nothing";
  expect_onnxruntime_agrees(*quantifind, mnist);
}

TEST_F(OnnxExportTest, WhatCannotBeExportedIsRefusedByNameAndNoFileIsLeft) {
  const ql::DatasetSpec spec = images({1, 8, 8}, 10);
  auto network = build("mlp", {"hidden=[16]"}, spec);
  network->quantizable_layers()[1].second->set_output_quantizer(std::make_shared<GridQuantizer>());
  const fs::path file = dir_ / "refused.onnx";
  try {
    ql::core::write_onnx_model(*network, spec, file, {});
    ADD_FAILURE() << "an output quantiser was exported";
  } catch (const ql::Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 'act1' has an output quantiser (grid of 1/64)"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(file));
  const ql::DatasetSpec tokens = [] {
    ql::DatasetSpec s;
    s.input_kind = ql::InputKind::tokens;
    s.input_shape = {12};
    s.num_classes = 4;
    s.vocabulary_size = 30;
    return s;
  }();
  const auto& metadata = registry_.find(ql::PluginKind::topology, "transformer");
  auto transformer = registry_.create<ql::Topology>("transformer", ql::core::plugin_options(metadata, {}))->build(tokens);
  EXPECT_THROW(ql::core::write_onnx_model(*transformer, tokens, file, {}), ql::Error);
  EXPECT_FALSE(fs::exists(file));
}

TEST_F(OnnxExportTest, QuantisedWeightsBecomeIntegerCodesAndDequantizeLinear) {
  const ql::DatasetSpec mnist = images({1, 28, 28}, 10);
  auto network = build("convnet", {"config=\"quantifind_mnist\""}, mnist);
  ql::core::write_onnx_model(*network, mnist, dir_ / "float.onnx", {});
  for (auto& [name, layer] : network->quantizable_layers()) {
    if (layer->has_weight()) layer->set_weight_quantizer(std::make_shared<PerChannelQuantizer>(4));
  }
  // Opset 13: int8 containers; opset 21: int4, about an eighth of the float file's bytes.
  const std::string in_int8 = expect_onnxruntime_agrees(*network, mnist, 13);
  EXPECT_NE(in_int8.find("4 DequantizeLinear, initialisers int8 8"), std::string::npos) << in_int8;
  const std::string in_int4 = expect_onnxruntime_agrees(*network, mnist, 21);
  EXPECT_NE(in_int4.find("4 DequantizeLinear, initialisers int4 8"), std::string::npos) << in_int4;
  const double ratio = static_cast<double>(fs::file_size(dir_ / "model.onnx")) / fs::file_size(dir_ / "float.onnx");
  EXPECT_LT(ratio, 0.2) << "a 4-bit network in opset 21 against its float file";
  // Codes wider than 8 bits do not fit opset 13: refused, naming the layer.
  for (auto& [name, layer] : network->quantizable_layers()) {
    if (layer->has_weight()) layer->set_weight_quantizer(std::make_shared<PerChannelQuantizer>(10));
  }
  try {
    ql::core::write_onnx_model(*network, mnist, dir_ / "wide.onnx", {13});
    ADD_FAILURE() << "10-bit codes were written into opset 13";
  } catch (const ql::Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 'features.0'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("opset 13"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir_ / "wide.onnx"));
}
