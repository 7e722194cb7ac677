// The network families: parameter counts against the published ones, forward shapes and a
// backward pass for every variant at small sizes, refusals, conformance.
#include "quantlab/core/conformance.hpp"
#include "quantlab/core/experiment_config.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/topology.hpp"
#include "support/test_support.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/types.h>

namespace fs = std::filesystem;

namespace {

class TopologiesTest : public ::testing::Test {
 protected:
  TopologiesTest() : registry_(std::vector<fs::path>{QL_TEST_PLUGIN_DIR}) {}

  std::shared_ptr<ql::Network> build(const std::string& plugin, const std::vector<std::string>& options,
                                     std::vector<std::int64_t> shape, std::int64_t classes) {
    const auto& metadata = registry_.find(ql::PluginKind::topology, plugin);
    auto topology = registry_.create<ql::Topology>(plugin, ql::core::plugin_options(metadata, options));
    ql::DatasetSpec spec;
    spec.input_shape = std::move(shape);
    spec.num_classes = classes;
    return topology->build(spec);
  }

  static std::int64_t parameters(ql::Network& network) {
    std::int64_t count = 0;
    for (const auto& p : network.parameters()) count += p.numel();
    return count;
  }

  // Forward of two samples, output shape, backward reaching every parameter.
  static void expect_trains(ql::Network& network, std::vector<std::int64_t> shape, std::int64_t classes) {
    shape.insert(shape.begin(), 2);
    network.train();
    const at::Tensor out = network.apply(torch::randn(shape));
    ASSERT_EQ(out.sizes(), (std::vector<std::int64_t>{2, classes}));
    out.sum().backward();
    for (const auto& p : network.named_parameters()) {
      EXPECT_TRUE(p.value().grad().defined()) << p.key();
    }
  }

  ql::core::PluginRegistry registry_;
};

}  // namespace

TEST_F(TopologiesTest, ImageNetParameterCountsMatchThePublishedOnes) {
  const std::vector<std::tuple<std::string, std::vector<std::string>, std::int64_t>> cases{
      {"alexnet", {}, 61'100'840},
      {"vgg", {"config=\"vgg11\""}, 132'863'336},
      {"vgg", {"config=\"vgg13\""}, 133'047'848},
      {"vgg", {"config=\"vgg16\""}, 138'357'544},
      {"vgg", {"config=\"vgg16\"", "batch_norm=true"}, 138'365'992},
      {"vgg", {"config=\"vgg19\""}, 143'667'240},
      {"resnet", {"depth=18"}, 11'689'512},
      {"resnet", {"depth=34"}, 21'797'672},
      {"resnet", {"depth=50", "family=\"imagenet\""}, 25'557'032},
      {"resnet", {"depth=101"}, 44'549'160},
      {"resnet", {"depth=152"}, 60'192'808},
  };
  for (const auto& [plugin, options, expected] : cases) {
    SCOPED_TRACE(fmt::format("{} {}", plugin, fmt::join(options, " ")));
    auto network = build(plugin, options, {3, 224, 224}, 1000);
    EXPECT_EQ(parameters(*network), expected);
  }
}

TEST_F(TopologiesTest, CifarResNetParameterCounts) {
  // Option A shortcuts have no parameters: 0.27M for ResNet-20 and 1.7M for ResNet-110, as in
  // He et al. (2016), table 6 (the exact counts of the usual PyTorch re-implementations).
  // Option B adds a 1x1 conv + BN at each of the two stage changes: 16*32 + 64 + 32*64 + 128.
  const std::vector<std::tuple<std::int64_t, std::string, std::int64_t>> cases{
      {8, "A", 75'290}, {20, "A", 269'722}, {32, "A", 464'154}, {44, "A", 658'586},
      {56, "A", 853'018}, {110, "A", 1'727'962}, {20, "B", 272'474}};
  for (const auto& [depth, shortcut, expected] : cases) {
    SCOPED_TRACE(fmt::format("resnet-{} option {}", depth, shortcut));
    auto network = build("resnet", {fmt::format("depth={}", depth), fmt::format("shortcut=\"{}\"", shortcut)},
                         {3, 32, 32}, 10);
    EXPECT_EQ(parameters(*network), expected);
  }
}

TEST_F(TopologiesTest, EveryVariantTrainsAtSmallSizes) {
  const std::vector<std::tuple<std::string, std::vector<std::string>, std::vector<std::int64_t>>> cases{
      {"vgg", {"config=\"vgg11\""}, {3, 32, 32}},
      {"vgg", {"config=\"vgg11\"", "batch_norm=true"}, {3, 32, 32}},
      {"vgg", {"config=\"vgg13\""}, {3, 32, 32}},
      {"vgg", {"config=\"vgg13\"", "batch_norm=true"}, {3, 32, 32}},
      {"vgg", {"config=\"vgg16\""}, {3, 32, 32}},
      {"vgg", {"config=\"vgg16\"", "batch_norm=true"}, {3, 32, 32}},
      {"vgg", {"config=\"vgg19\""}, {3, 32, 32}},
      {"vgg", {"config=\"vgg19\"", "batch_norm=true"}, {1, 32, 32}},
      {"vgg", {"config=\"vgg_ana\"", "capacity=0.125"}, {3, 32, 32}},
      {"vgg", {"config=\"vgg8\"", "capacity=0.125"}, {3, 32, 32}},
      {"vgg", {"config=\"vgg9\"", "capacity=0.125"}, {3, 16, 16}},
      {"alexnet", {}, {3, 64, 64}},
      {"alexnet", {"batch_norm=true"}, {3, 64, 64}},
      {"resnet", {"depth=8"}, {3, 32, 32}},
      {"resnet", {"depth=20", "shortcut=\"B\"", "zero_init_residual=true"}, {1, 28, 28}},
      {"resnet", {"depth=32"}, {3, 32, 32}},
      {"resnet", {"depth=44"}, {3, 16, 16}},
      {"resnet", {"depth=56"}, {3, 16, 16}},
      {"resnet", {"depth=110", "shortcut=\"B\""}, {3, 16, 16}},
      {"resnet", {"depth=18", "family=\"imagenet\""}, {3, 32, 32}},
      {"resnet", {"depth=34", "family=\"imagenet\""}, {3, 32, 32}},
      {"resnet", {"depth=50", "family=\"imagenet\"", "zero_init_residual=true"}, {3, 32, 32}},
      {"resnet", {"depth=101", "family=\"imagenet\""}, {3, 32, 32}},
      {"resnet", {"depth=152", "family=\"imagenet\""}, {3, 32, 32}},
      {"convnet", {}, {3, 32, 32}},
      {"convnet", {"config=\"quantifind_mnist\""}, {1, 28, 28}},
  };
  for (const auto& [plugin, options, shape] : cases) {
    SCOPED_TRACE(fmt::format("{} {}", plugin, fmt::join(options, " ")));
    auto network = build(plugin, options, shape, 7);
    expect_trains(*network, shape, 7);
    EXPECT_FALSE(network->quantizable_layers().empty());
  }
}

TEST_F(TopologiesTest, AnaVggHasTheReferenceLayout) {
  auto network = build("vgg", {"config=\"vgg_ana\""}, {3, 32, 32}, 10);
  // 6 conv + 3 FC quantisable weight layers, 8 activations; BN after the last Linear.
  std::int64_t weights = 0, activations = 0;
  for (const auto& [name, layer] : network->quantizable_layers()) (layer->has_weight() ? weights : activations)++;
  EXPECT_EQ(weights, 9);
  EXPECT_EQ(activations, 8);
  EXPECT_EQ(network->named_parameters().find("classifier.7.weight")->sizes(), (std::vector<std::int64_t>{10}));
}

TEST_F(TopologiesTest, SpecsTheNetworksCannotServeAreRefusedWithAReason) {
  auto refused = [&](const std::string& plugin, const std::vector<std::string>& options,
                     std::vector<std::int64_t> shape, const std::string& expected) {
    try {
      build(plugin, options, std::move(shape), 10);
      ADD_FAILURE() << plugin << " accepted the spec";
    } catch (const ql::ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
  };
  refused("alexnet", {}, {1, 28, 28}, "needs at least 63x63");
  refused("vgg", {"config=\"vgg16\""}, {1, 28, 28}, "at least 32x32");
  refused("resnet", {"depth=18"}, {3, 32, 32}, "set family = \"imagenet\"");
  refused("resnet", {"depth=20"}, {3, 224, 224}, "set family = \"cifar\"");
}

TEST_F(TopologiesTest, BadOptionsAreRefused) {
  const auto& resnet = registry_.find(ql::PluginKind::topology, "resnet");
  EXPECT_THROW(registry_.create<ql::Topology>("resnet", ql::core::plugin_options(resnet, {"depth=19"})), ql::ConfigError);
  EXPECT_THROW(registry_.create<ql::Topology>("resnet", ql::core::plugin_options(resnet, {"depth=20", "family=\"imagenet\""})),
               ql::ConfigError);
  const auto& vgg = registry_.find(ql::PluginKind::topology, "vgg");
  EXPECT_THROW(registry_.create<ql::Topology>("vgg", ql::core::plugin_options(vgg, {"config=\"vgg17\""})), ql::ConfigError);
  EXPECT_THROW(ql::core::plugin_options(vgg, {"capacty=2"}), ql::ConfigError);
}

TEST_F(TopologiesTest, EveryTopologyPassesConformance) {
  for (const auto& [name, options] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {"mlp", {}}, {"resnet", {}}, {"vgg", {"config=\"vgg_ana\"", "capacity=0.125"}}, {"alexnet", {}},
           {"convnet", {}}, {"transformer", {}}, {"transformer", {"positions=\"learned\"", "norm=\"pre\"", "pooling=\"max\""}}}) {
    const auto report = ql::core::check_conformance(registry_, registry_.find(ql::PluginKind::topology, name), options);
    EXPECT_TRUE(report.passed()) << name << "\n" << fmt::format("{}", fmt::join(report.lines, "\n"));
  }
}

namespace {

std::shared_ptr<ql::Network> transformer(ql::core::PluginRegistry& registry, std::int64_t length,
                                         const std::vector<std::string>& options = {}) {
  auto topology = registry.create<ql::Topology>(
      "transformer", ql::core::plugin_options(registry.find(ql::PluginKind::topology, "transformer"), options));
  ql::DatasetSpec spec;
  spec.input_kind = ql::InputKind::tokens;
  spec.input_shape = {length};
  spec.vocabulary_size = 30;
  spec.num_classes = 18;
  torch::manual_seed(5);
  auto network = topology->build(spec);
  network->eval();
  return network;
}

}  // namespace

TEST_F(TopologiesTest, TransformerIgnoresPaddingAndNeverAttendsAcrossTheBatch) {
  for (const char* positions : {"positions=\"sinusoidal\"", "positions=\"learned\""}) {
    SCOPED_TRACE(positions);
    auto network = transformer(registry_, 8, {positions});
    torch::NoGradGuard no_grad;
    const at::Tensor name = torch::tensor({{4, 9, 2, 0, 0, 0, 0, 0}}, torch::kInt64);
    const at::Tensor shorter = torch::tensor({{4, 9, 2, 0, 0}}, torch::kInt64);
    const at::Tensor alone = network->apply(name);
    EXPECT_EQ(alone.sizes(), (std::vector<std::int64_t>{1, 18}));
    // More or less padding changes nothing.
    EXPECT_TRUE(torch::allclose(network->apply(shorter), alone, 1e-5, 1e-6));
    // Batched with another name, the first row is what it was alone (batch-first attention).
    const at::Tensor batch = torch::tensor({{4, 9, 2, 0, 0, 0, 0, 0}, {7, 7, 7, 7, 7, 1, 3, 0}}, torch::kInt64);
    EXPECT_TRUE(torch::allclose(network->apply(batch)[0], alone[0], 1e-5, 1e-6));
    // A sequence of padding only gives finite logits.
    EXPECT_TRUE(torch::isfinite(network->apply(torch::zeros({2, 8}, torch::kInt64))).all().item<bool>());
  }
}

TEST_F(TopologiesTest, TransformerRefusesImagesAndBadHeads) {
  EXPECT_THROW(build("transformer", {}, {1, 28, 28}, 10), ql::ConfigError);
  const auto& metadata = registry_.find(ql::PluginKind::topology, "transformer");
  EXPECT_THROW(registry_.create<ql::Topology>("transformer", ql::core::plugin_options(metadata, {"d_model=30", "heads=4"})),
               ql::ConfigError);
}

// Network::layer_input: every layer's input as a full forward pass sees it, from a pass that
// skips the work after the layer (strided and padded convolutions, residual additions, pooling,
// the classifier); afterwards the network computes as before.
TEST_F(TopologiesTest, LayerInputIsWhatAFullPassGivesTheLayer) {
  torch::manual_seed(3);
  for (const auto& [plugin, options] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {"resnet", {"depth=8"}}, {"vgg", {"config=\"vgg_ana\""}}}) {
    auto network = build(plugin, options, {3, 32, 32}, 10);
    network->eval();
    const at::Tensor x = torch::randn({2, 3, 32, 32});
    const at::Tensor before = network->apply(x).detach();
    for (const auto& [name, layer] : network->quantizable_layers()) {
      at::Tensor seen;
      layer->set_input_observer([&seen](const at::Tensor& input) {
        if (!seen.defined()) seen = input.detach().clone();
      });
      network->apply(x);
      layer->set_input_observer(nullptr);
      EXPECT_TRUE(torch::equal(network->layer_input(*layer, x), seen)) << plugin << " " << name;
    }
    EXPECT_TRUE(torch::equal(network->apply(x).detach(), before)) << plugin;
  }
}
