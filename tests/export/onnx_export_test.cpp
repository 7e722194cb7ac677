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
#include <map>
#include <tuple>
#include <random>
#include <sstream>

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

// An activation quantiser on an affine grid, computed as the export computes it.
class GridActivation : public ql::Quantizer {
 public:
  explicit GridActivation(ql::AffineGrid grid) : grid_(grid) {}
  at::Tensor forward(const at::Tensor& x) override { return ql::quantize_affine(x, grid_); }
  std::optional<ql::AffineGrid> affine_grid() const override { return grid_; }
  std::string describe() const override { return "test grid"; }

 private:
  ql::AffineGrid grid_;
};

ql::AffineGrid fixed_grid(float scale, std::int64_t low, std::int64_t high, float offset = 0.0f) {
  ql::AffineGrid grid;
  grid.scale = scale;
  grid.low = low;
  grid.high = high;
  grid.offset = offset;
  return grid;
}

ql::AffineGrid max_abs_grid(float scale, std::int64_t low, std::int64_t high, bool per_sample) {
  ql::AffineGrid grid = fixed_grid(scale, low, high);
  grid.range = ql::AffineGrid::Range::max_abs;
  grid.per_sample = per_sample;
  return grid;
}

// A network whose topology gives no ONNX export.
class PlainNetwork : public ql::Network {
 public:
  at::Tensor forward(const at::Tensor& x) override { return x.flatten(1); }
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
  // `input` (default: 6 samples of N(0, 1)).
  std::string expect_onnxruntime_agrees(ql::Network& network, const ql::DatasetSpec& spec, int opset = 13,
                                        bool fold_batch_norm = false, at::Tensor input = {}) {
    std::vector<std::int64_t> shape{6};
    shape.insert(shape.end(), spec.input_shape.begin(), spec.input_shape.end());
    if (!input.defined()) input = torch::randn(shape);
    const at::Tensor logits = network.apply(input).detach();
    ql::core::write_onnx_model(network, spec, dir_ / "model.onnx", {opset, fold_batch_norm});
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

  // Exporting `network` must fail with a ql::Error whose message holds each of `expected`,
  // and leave no file.
  void expect_export_refused(ql::Network& network, const ql::DatasetSpec& spec, const ql::core::OnnxModelOptions& options,
                             const std::vector<std::string>& expected) {
    const fs::path file = dir_ / "refused.onnx";
    try {
      ql::core::write_onnx_model(network, spec, file, options);
      ADD_FAILURE() << "exported; expected a refusal saying: " << expected.front();
    } catch (const ql::Error& e) {
      for (const std::string& part : expected) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(file));
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

// bad-input: exporting a layer whose output quantiser has no affine grid, or a network of a topology without export support | `layer 'act1': its output quantiser (…) has no affine grid, which ONNX export needs`; `this topology's network has no ONNX export …`; nothing written | 1
TEST_F(OnnxExportTest, WhatCannotBeExportedIsRefusedByNameAndNoFileIsLeft) {
  const ql::DatasetSpec spec = images({1, 8, 8}, 10);
  auto network = build("mlp", {"hidden=[16]"}, spec);
  network->quantizable_layers()[1].second->set_output_quantizer(std::make_shared<GridQuantizer>());
  expect_export_refused(*network, spec, {}, {"layer 'act1': its output quantiser (grid of 1/64) has no affine grid"});
  // A network whose topology does not override export_onnx.
  PlainNetwork plain;
  expect_export_refused(plain, spec, {}, {"this topology's network has no ONNX export"});
}

// Token ids in, with padding (id 0) at the ends of sequences and one sequence of padding only.
TEST_F(OnnxExportTest, TransformersWithEveryOptionRunInOnnxruntimeToTheSameLogits) {
  ql::DatasetSpec tokens;
  tokens.input_kind = ql::InputKind::tokens;
  tokens.input_shape = {12};
  tokens.num_classes = 5;
  tokens.vocabulary_size = 30;
  at::Tensor input = torch::randint(1, 30, {6, 12}, torch::kInt64);
  input.slice(1, 7).select(0, 1).zero_();
  input.slice(1, 3).select(0, 2).zero_();
  input.select(0, 3).zero_();
  for (const std::string& options : {"norm=\"post\" pooling=\"mean\" positions=\"sinusoidal\" activation=\"relu\"",
                                     "norm=\"pre\" pooling=\"max\" positions=\"learned\" activation=\"gelu\""}) {
    std::vector<std::string> settings{"d_model=16", "heads=4", "layers=2", "feedforward=32"};
    std::istringstream split(options);
    for (std::string option; split >> option;) settings.push_back(option);
    auto network = build("transformer", settings, tokens);
    for (const int opset : {13, 21}) {
      SCOPED_TRACE(options + fmt::format(" opset {}", opset));
      expect_onnxruntime_agrees(*network, tokens, opset, false, input);
    }
  }
  // Quantised: 4-bit integer weights in every linear layer and an unsigned or a ternary grid on
  // the feed-forward activations (onnxruntime rewrites both on their way to its integer kernels).
  auto network = build("transformer", {"d_model=16", "heads=2", "layers=1", "feedforward=32"}, tokens);
  for (const ql::AffineGrid& grid : {fixed_grid(0.25f, 0, 15), fixed_grid(0.5f, -1, 1, 0.1f)}) {
    for (auto& [name, layer] : network->quantizable_layers()) {
      if (layer->has_weight()) layer->set_weight_quantizer(std::make_shared<PerChannelQuantizer>(4));
      else layer->set_output_quantizer(std::make_shared<GridActivation>(grid));
    }
    for (const int opset : {13, 21}) {
      SCOPED_TRACE(fmt::format("grid [{}, {}] opset {}", grid.low, grid.high, opset));
      const std::string report = expect_onnxruntime_agrees(*network, tokens, opset, false, input);
      EXPECT_NE(report.find("1 QuantizeLinear"), std::string::npos) << report;
    }
  }
}

// bad-input: opset 13 asked to hold codes wider than 8 bits | `layer 'features.0': codes in [-511, 511] do not fit the 8-bit containers of opset 13`; nothing written | 1
TEST_F(OnnxExportTest, QuantisedWeightsBecomeIntegerCodesAndDequantizeLinear) {
  const ql::DatasetSpec mnist = images({1, 28, 28}, 10);
  auto network = build("convnet", {"config=\"quantifind_mnist\""}, mnist);
  ql::core::write_onnx_model(*network, mnist, dir_ / "float.onnx", {});
  for (auto& [name, layer] : network->quantizable_layers()) {
    if (layer->has_weight()) layer->set_weight_quantizer(std::make_shared<PerChannelQuantizer>(4));
  }
  // Opset 13: int8 containers; opset 21: int4, about an eighth of the float file's bytes.
  const std::string in_int8 = expect_onnxruntime_agrees(*network, mnist, 13);
  EXPECT_NE(in_int8.find("4 DequantizeLinear, 0 QuantizeLinear, 0 BatchNormalization, initialisers int8 8"),
            std::string::npos)
      << in_int8;
  const std::string in_int4 = expect_onnxruntime_agrees(*network, mnist, 21);
  EXPECT_NE(in_int4.find("4 DequantizeLinear, 0 QuantizeLinear, 0 BatchNormalization, initialisers int4 8"),
            std::string::npos)
      << in_int4;
  const double ratio = static_cast<double>(fs::file_size(dir_ / "model.onnx")) / fs::file_size(dir_ / "float.onnx");
  EXPECT_LT(ratio, 0.2) << "a 4-bit network in opset 21 against its float file";
  // Codes wider than 8 bits do not fit opset 13: refused, naming the layer.
  for (auto& [name, layer] : network->quantizable_layers()) {
    if (layer->has_weight()) layer->set_weight_quantizer(std::make_shared<PerChannelQuantizer>(10));
  }
  expect_export_refused(*network, mnist, {13}, {"layer 'features.0'", "opset 13"});
}

// Rounding half to even, clamped to the grid, from (x - offset) / scale, as QuantizeLinear does.
TEST_F(OnnxExportTest, AnAffineGridRoundsHalfToEvenWithinItsRange) {
  const at::Tensor x = torch::tensor({0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 9.0f, -9.0f});
  EXPECT_TRUE(torch::equal(ql::quantize_affine(x, fixed_grid(1.0f, -8, 7)),
                           torch::tensor({0.0f, 2.0f, 2.0f, -0.0f, -2.0f, 7.0f, -8.0f})));
  EXPECT_TRUE(torch::equal(ql::quantize_affine(x, fixed_grid(0.5f, -1, 1, 0.25f)),
                           torch::tensor({0.0f, 0.5f, 0.5f, -0.5f, -0.5f, 0.5f, -0.5f})));
  // max_abs: s = scale · max|x| per sample; a sample of zeros stays zeros.
  const at::Tensor batch = torch::tensor({{1.0f, -0.5f, 0.26f}, {0.0f, 0.0f, 0.0f}});
  EXPECT_TRUE(torch::equal(ql::quantize_affine(batch, max_abs_grid(0.25f, -4, 4, true)),
                           torch::tensor({{1.0f, -0.5f, 0.25f}, {0.0f, 0.0f, 0.0f}})));
}

// bad-input: a quantised activation whose codes do not fit the opset's containers | `'act2.quantized': activation codes in [-1000, 1000] do not fit the containers of opset 13 (…)`; nothing written | 1
TEST_F(OnnxExportTest, QuantisedActivationsAndInputsBecomeQuantizeLinearAndDequantizeLinear) {
  const ql::DatasetSpec spec = images({1, 8, 8}, 10);
  auto network = build("mlp", {"hidden=[32, 16]", "batch_norm=true"}, spec);
  std::map<std::string, std::shared_ptr<ql::nn::QuantizableLayer>> layers;
  for (const auto& [name, layer] : network->quantizable_layers()) layers[name] = layer;
  const at::Tensor input = torch::randn({4, 1, 8, 8});
  const at::Tensor before = network->apply(input).detach();
  // ANA's ternary grid with a mean μ, a 4-bit unsigned grid, a per-tensor grid on a linear
  // layer's output, and uniform's per-sample 4-bit input grid.
  layers.at("act1")->set_output_quantizer(std::make_shared<GridActivation>(fixed_grid(0.5f, -1, 1, 0.1f)));
  layers.at("fc2")->set_output_quantizer(std::make_shared<GridActivation>(max_abs_grid(1.0f / 127, -127, 127, false)));
  layers.at("act2")->set_output_quantizer(std::make_shared<GridActivation>(fixed_grid(0.25f, 0, 15)));
  network->set_input_quantizer(std::make_shared<GridActivation>(max_abs_grid(2.0f / 15, -8, 7, true)));
  ASSERT_FALSE(torch::allclose(network->apply(input), before, 1e-3, 1e-3)) << "the grids change nothing";
  for (const int opset : {13, 21}) {
    const std::string report = expect_onnxruntime_agrees(*network, spec, opset);
    EXPECT_NE(report.find("4 DequantizeLinear, 4 QuantizeLinear, 2 BatchNormalization"), std::string::npos) << report;
  }
  // Codes wider than 8 bits: int16 in opset 21, refused by opset 13, naming the layer.
  layers.at("act2")->set_output_quantizer(std::make_shared<GridActivation>(fixed_grid(0.002f, -1000, 1000)));
  expect_onnxruntime_agrees(*network, spec, 21);
  expect_export_refused(*network, spec, {13}, {"'act2.quantized': activation codes in [-1000, 1000]"});
}

// bad-input: `fold_batch_norm` where a batch norm cannot be folded (integer codes and a channel scale γ/√(σ² + ε) that is not positive, an input from another node) | `batch norm 'bn1' cannot be folded into the integer codes of 'conv1': …`; nothing written | 1
TEST_F(OnnxExportTest, BatchNormsFoldIntoTheLayersBeforeThemAndIntegerCodesKeepTheirValues) {
  const ql::DatasetSpec mlp_spec = images({1, 8, 8}, 10);
  auto mlp = build("mlp", {"hidden=[32, 16]", "batch_norm=true", "output_batch_norm=true"}, mlp_spec);
  EXPECT_NE(expect_onnxruntime_agrees(*mlp, mlp_spec, 13, true).find("0 BatchNormalization"), std::string::npos);
  // Integer codes: the same codes, per-channel scales that absorb the batch norm.
  const ql::DatasetSpec cifar = images({3, 16, 16}, 10);
  auto resnet = build("resnet", {"depth=8", "shortcut=\"B\""}, cifar);
  for (auto& [name, layer] : resnet->quantizable_layers()) {
    if (layer->has_weight()) layer->set_weight_quantizer(std::make_shared<PerChannelQuantizer>(4));
  }
  const std::string unfolded = expect_onnxruntime_agrees(*resnet, cifar, 21);
  const std::string folded = expect_onnxruntime_agrees(*resnet, cifar, 21, true);
  const auto codes = [](const std::string& report) { return report.substr(report.find("initialisers")); };
  EXPECT_EQ(codes(folded).substr(0, codes(folded).find('\n')), codes(unfolded).substr(0, codes(unfolded).find('\n')));
  EXPECT_NE(folded.find("0 BatchNormalization"), std::string::npos) << folded;
  EXPECT_EQ(unfolded.find("0 BatchNormalization"), std::string::npos) << unfolded;
  // A negative γ cannot be absorbed by a positive scale: refused, naming the batch norm.
  {
    torch::NoGradGuard no_grad;
    for (auto& parameter : resnet->named_parameters()) {
      if (parameter.key() == "bn1.weight") parameter.value()[0] = -1.0;
    }
  }
  expect_export_refused(*resnet, cifar, {13, true}, {"batch norm 'bn1' cannot be folded into the integer codes"});
}

TEST_F(OnnxExportTest, ResNetsWithEveryShortcutRunInOnnxruntimeToTheSameLogits) {
  const ql::DatasetSpec cifar = images({3, 16, 16}, 10);
  for (const char* shortcut : {"A", "B"}) {
    auto network = build("resnet", {"depth=8", fmt::format("shortcut=\"{}\"", shortcut)}, cifar);
    expect_onnxruntime_agrees(*network, cifar);
  }
  const ql::DatasetSpec small_imagenet = images({3, 32, 32}, 10);
  for (const char* depth : {"18", "50"}) {
    auto network = build("resnet", {"family=\"imagenet\"", fmt::format("depth={}", depth)}, small_imagenet);
    expect_onnxruntime_agrees(*network, small_imagenet);
  }
}

TEST_F(OnnxExportTest, VggAndAlexNetWithAdaptivePoolingRunInOnnxruntimeToTheSameLogits) {
  const ql::DatasetSpec cifar = images({3, 32, 32}, 10);
  for (const char* config : {"vgg_ana", "vgg8"}) {
    auto network = build("vgg", {fmt::format("config=\"{}\"", config), "capacity=0.25"}, cifar);
    expect_onnxruntime_agrees(*network, cifar);
  }
  // 63x63: AlexNet's features end at 1x1, which the 6x6 adaptive pool repeats (Expand).
  const ql::DatasetSpec small = images({3, 63, 63}, 10);
  auto alexnet = build("alexnet", {"batch_norm=true"}, small);
  expect_onnxruntime_agrees(*alexnet, small);
  // Maps that are no multiple of the pool's output are refused, naming the module.
  const ql::DatasetSpec odd = images({3, 127, 127}, 10);
  auto refused = build("alexnet", {}, odd);
  expect_export_refused(*refused, odd, {}, {"module 'avgpool'"});
}

// The whole path a user takes, on Fashion-MNIST (make deps installs it): a run with [export]
// writes the kept, quantised result (integer codes, raw uint8 pixels in, the problem's
// normalisation as the first nodes), and tools/verify_onnx.py scores it on the test split
// exactly as QuantLab did (tolerance 0, at accuracies well below 100 %). Returns its report.
static std::string verify_unit(const fs::path& unit, std::int64_t test_samples = 1000);

// Runs the experiment `head` (its [problem] and [topology]) with `algorithm` and [export],
// then verify_unit on its unit.
static std::string run_export_and_verify(const fs::path& dir, const std::string& head, const std::string& algorithm,
                                         int opset, std::int64_t test_samples, const std::string& format = "onnx") {
  ql::test::write_text(dir / "exp.toml", fmt::format(R"([experiment]
seed = 5
[storage]
logs = "logs"
{}
[training]
epochs = 1
batch_size = 64
[[algorithm]]
{}
[export]
format = "{}"
opset = {}
)",
                                                     head, algorithm, format, opset));
  const auto run = ql::test::run_qlhost("run " + ql::test::quoted((dir / "exp.toml").string()), dir);
  EXPECT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_NE((run.out + run.err).find(fmt::format("fold0/result.onnx (ONNX opset {}", opset)), std::string::npos)
      << run.out << run.err;
  fs::path unit;
  for (const auto& entry : fs::recursive_directory_iterator(dir / "logs")) {
    if (entry.path().filename() == "exp0001") unit = entry.path();
  }
  return verify_unit(unit, test_samples);
}

// An MLP on 3,000 Fashion-MNIST training images, scored on 1,000 test images, exported to ONNX
// and quantized.h5.
static std::string run_and_verify(const fs::path& dir, const std::string& algorithm, int opset,
                                  const std::string& topology_options = "") {
  EXPECT_TRUE(fs::exists("/usr/share/datasets/fashion-mnist")) << "make deps installs dataset-fashion-mnist";
  return run_export_and_verify(dir, R"([problem]
plugin = "mnist"
max_train_samples = 3000
max_test_samples = 1000
[topology]
plugin = "mlp"
hidden = [64]
)" + topology_options,
                               algorithm, opset, 1000, "onnx+h5");
}

// tools/verify_onnx.py on the unit with tolerance 0; returns the model's initialiser types.
static std::string verify_unit(const fs::path& unit, std::int64_t test_samples) {
  const auto verified = ql::test::run_command(fmt::format("{} {}/tools/verify_onnx.py {} --tolerance 0 2>&1",
                                                          QL_TEST_PYTHON, QL_TEST_SOURCE_DIR,
                                                          ql::test::quoted(unit.string())));
  std::cout << verified.out;
  EXPECT_EQ(verified.exit_code, 0) << verified.out;
  EXPECT_NE(verified.out.find(fmt::format("on {} test samples", test_samples)), std::string::npos) << verified.out;
  if (fs::exists(unit / "fold0" / "quantized.h5")) {
    // quantized.h5 alone, rebuilt in NumPy, predicts what QuantLab predicts.
    const auto rebuilt = ql::test::run_command(fmt::format("{} {}/tests/export/check_quantized_h5.py {} 2>&1",
                                                           QL_TEST_PYTHON, QL_TEST_SOURCE_DIR,
                                                           ql::test::quoted(unit.string())));
    std::cout << rebuilt.out;
    EXPECT_EQ(rebuilt.exit_code, 0) << rebuilt.out;
  }
  const auto integers = ql::test::run_command(fmt::format(
      "{} -c \"import onnx, sys; m = onnx.load(sys.argv[1]); "
      "print(sorted(set(onnx.TensorProto.DataType.Name(t.data_type) for t in m.graph.initializer)))\" {}",
      QL_TEST_PYTHON, ql::test::quoted((unit / "fold0" / "result.onnx").string())));
  return integers.out;
}

TEST_F(OnnxExportTest, UniformGpfqAndAnaResultsScoreInOnnxruntimeAsInQuantLab) {
  // 4-bit per-channel codes in int4 (opset 21).
  EXPECT_NE(run_and_verify(dir_ / "uniform", "plugin = \"uniform\"\nbits = 4\nscheme = \"symmetric\"\n"
                                              "granularity = \"per_channel\"\nsweep = false",
                           21)
                .find("'INT4'"),
            std::string::npos);
  // GPFQ's ternary alphabet: codes -1, 0, 1 in int8 (opset 13).
  EXPECT_NE(run_and_verify(dir_ / "gpfq", "plugin = \"greedy\"\ncalibration_samples = 1000\nsweep = false\nexport = false", 13)
                .find("'INT8'"),
            std::string::npos);
  // ANA's ternary weights and ternary activations (QuantizeLinear -> Clip -> DequantizeLinear),
  // in ANA's layout: Linear -> batch norm -> quantised identity.
  EXPECT_NE(run_and_verify(dir_ / "ana", "plugin = \"ana\"\nforward_sigma = [0.0]", 21,
                           "batch_norm = true\nactivation = \"identity\"")
                .find("'INT4'"),
            std::string::npos);
}

// CIFAR-10 binary batches in the official format: five training files of `per_file` records
// and a test file of `test`; class k's images are noise plus a brightness of its own in one
// channel, so one epoch learns something and the predictions vary.
static void write_cifar_files(const fs::path& dir, std::int64_t per_file, std::int64_t test) {
  std::mt19937 random(7);
  const auto records = [&](std::int64_t count) {
    std::vector<std::uint8_t> bytes;
    for (std::int64_t i = 0; i < count; ++i) {
      const auto label = static_cast<int>(random() % 10);
      bytes.push_back(static_cast<std::uint8_t>(label));
      for (int c = 0; c < 3; ++c) {
        for (int p = 0; p < 32 * 32; ++p) {
          const int level = c == label % 3 ? 64 + 48 * (label / 3) : 0;
          bytes.push_back(static_cast<std::uint8_t>(std::min(255, level + static_cast<int>(random() % 64))));
        }
      }
    }
    return bytes;
  };
  for (int b = 1; b <= 5; ++b) ql::test::write_bytes(dir / fmt::format("data_batch_{}.bin", b), records(per_file));
  ql::test::write_bytes(dir / "test_batch.bin", records(test));
}

// The matrix: convnet, ResNet and VGG on CIFAR-10 files, each with uniform (4-bit per-channel
// weights, int4, and 4-bit per-sample inputs), GPFQ (ternary weights) and ANA (ternary weights
// and activations); onnxruntime on the raw test images predicts what QuantLab predicts.
TEST_F(OnnxExportTest, ConvNetResNetAndVggWithEveryAlgorithmPredictInOnnxruntimeAsInQuantLab) {
  write_cifar_files(dir_ / "cifar", 200, 300);
  const std::vector<std::pair<std::string, std::string>> topologies{
      {"convnet", "plugin = \"convnet\"\nconfig = \"gpfq_cifar10\""},
      {"resnet", "plugin = \"resnet\"\ndepth = 8"},
      {"vgg", "plugin = \"vgg\"\nconfig = \"vgg8\"\ncapacity = 0.125"}};
  const std::vector<std::tuple<std::string, std::string, int>> algorithms{
      {"uniform", "plugin = \"uniform\"\nbits = 4\ngranularity = \"per_channel\"\nquantize_inputs = true\nsweep = false", 21},
      {"gpfq", "plugin = \"greedy\"\ncalibration_samples = 128\nsweep = false\nexport = false", 13},
      {"ana", "plugin = \"ana\"\nforward_sigma = [0.0]", 13}};
  for (const auto& [topology, topology_options] : topologies) {
    for (const auto& [algorithm, algorithm_options, opset] : algorithms) {
      SCOPED_TRACE(topology + " x " + algorithm);
      const std::string head = fmt::format("[problem]\nplugin = \"cifar10\"\ndata_dir = \"{}\"\naugment = false\n[topology]\n{}",
                                           (dir_ / "cifar").string(), topology_options);
      run_export_and_verify(dir_ / (topology + "_" + algorithm), head, algorithm_options, opset, 300);
    }
  }
}

// An export the network cannot give fails the run with the reason, after the result is kept.
// bad-input: `[export] format = "onnx"` for a network ONNX export cannot express (an input or output quantiser without an affine grid, codes too wide for the opset, a topology without export) | `export to ONNX: the network's input quantiser (…) has no affine grid, which ONNX export needs (the fold is done and its result kept)`; `result.pt` written, no `result.onnx` | 1
TEST_F(OnnxExportTest, ARunWhoseResultCannotBeExportedKeepsTheResultAndSaysWhy) {
  ql::test::write_idx_dataset(dir_ / "data", 200, 50, 28, 4, /*gzip=*/false);
  ql::test::write_text(dir_ / "exp.toml", ql::test::small_mlp_experiment(5) + R"(
[[algorithm]]
plugin = "uniform"
bits = 4
scheme = "asymmetric"
quantize_inputs = true
sweep = false
[export]
format = "onnx"
)");
  const auto run = ql::test::run_qlhost("run " + ql::test::quoted((dir_ / "exp.toml").string()), dir_.path());
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("export to ONNX: the network's input quantiser (uniform 4-bit per-sample input) has no "
                         "affine grid"),
            std::string::npos)
      << run.err;
  const fs::path unit = dir_ / "logs" / "mnist" / "mlp" / "exp0001";
  EXPECT_TRUE(fs::exists(unit / "fold0" / "checkpoints" / "result.pt"));
  EXPECT_FALSE(fs::exists(unit / "fold0" / "result.onnx"));
}

// bad-input: `qlhost export` of a folder that is no unit, a unit without a result yet, an output that cannot be written, an opset other than 13 or 21 | `… is not a results unit …`; `… has no result yet: fold 0 is … and …/result.pt does not exist`; `cannot create …/.model.onnx.tmpN: No such file or directory`; `export: --opset 17 (13 or 21)`; nothing written | 1 or 2
TEST_F(OnnxExportTest, QlhostExportRemakesAUnitsModelFromWhatTheUnitKeeps) {
  // Uniform 4-bit weights and inputs: integer forms and the input's grid come back from result.pt.
  run_and_verify(dir_ / "uniform",
                 "plugin = \"uniform\"\nbits = 4\nscheme = \"symmetric\"\ngranularity = \"per_channel\"\n"
                 "quantize_inputs = true\nsweep = false",
                 21);
  const fs::path unit = dir_ / "uniform" / "logs" / "mnist" / "mlp" / "exp0001";
  // The same result in opset 13, from result.pt's weights, integer forms and input encoding.
  const auto again = ql::test::run_qlhost("export " + ql::test::quoted(unit.string()) + " --opset 13", dir_.path());
  ASSERT_EQ(again.exit_code, 0) << again.out << again.err;
  EXPECT_NE(again.out.find("result.onnx (ONNX opset 13"), std::string::npos) << again.out;
  // quantized.h5 likewise (verify_unit rebuilds it in NumPy).
  fs::remove(unit / "fold0" / "quantized.h5");
  const auto h5 = ql::test::run_qlhost("export " + ql::test::quoted(unit.string()) + " --format h5", dir_.path());
  ASSERT_EQ(h5.exit_code, 0) << h5.out << h5.err;
  EXPECT_NE(h5.out.find("fold0/quantized.h5"), std::string::npos) << h5.out;
  const std::string types = verify_unit(unit);
  EXPECT_NE(types.find("'INT8'"), std::string::npos) << types;
  EXPECT_EQ(types.find("'INT4'"), std::string::npos) << types;

  const auto not_a_unit = ql::test::run_qlhost("export " + ql::test::quoted(dir_.path().string()), dir_.path());
  EXPECT_EQ(not_a_unit.exit_code, 1);
  EXPECT_NE(not_a_unit.err.find("is not a results unit"), std::string::npos) << not_a_unit.err;
  const fs::path unwritable = dir_ / "no" / "such" / "folder" / "model.onnx";
  const auto cannot_write = ql::test::run_qlhost(
      "export " + ql::test::quoted(unit.string()) + " --output " + ql::test::quoted(unwritable.string()), dir_.path());
  EXPECT_EQ(cannot_write.exit_code, 1);
  EXPECT_NE(cannot_write.err.find(unwritable.parent_path().string()), std::string::npos) << cannot_write.err;
  EXPECT_FALSE(fs::exists(unwritable));
  const auto wrong_opset = ql::test::run_qlhost("export " + ql::test::quoted(unit.string()) + " --opset 17", dir_.path());
  EXPECT_EQ(wrong_opset.exit_code, 2);
  fs::remove(unit / "fold0" / "checkpoints" / "result.pt");
  const auto no_result = ql::test::run_qlhost("export " + ql::test::quoted(unit.string()), dir_.path());
  EXPECT_EQ(no_result.exit_code, 1);
  EXPECT_NE(no_result.err.find("has no result yet"), std::string::npos) << no_result.err;
}
