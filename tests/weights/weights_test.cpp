// Pretrained weights in (docs/weights.md): torchvision's resnet18, vgg11_bn and alexnet with
// seeded random weights, saved by the project environment's PyTorch as a state dict and as
// safetensors (tests/weights/make_torchvision_weights.py), load into QuantLab's topologies and
// give PyTorch's logits; bad weights files are refused with one line.
#include "quantlab/core/experiment_config.hpp"
#include "quantlab/core/plugin_registry.hpp"
#include "quantlab/core/unit_record.hpp"
#include "quantlab/core/weights_file.hpp"
#include "quantlab/sdk/error.hpp"
#include "support/test_support.hpp"

#include <gtest/gtest.h>
#include <torch/types.h>

#include <cstring>
#include <functional>
#include <random>
#include <tuple>

namespace fs = std::filesystem;

namespace {

at::Tensor read_floats(const fs::path& path, std::vector<std::int64_t> shape) {
  const std::vector<std::uint8_t> bytes = ql::test::read_bytes(path);
  at::Tensor values = torch::empty(shape, torch::kFloat32);
  EXPECT_EQ(bytes.size(), values.nbytes()) << path;
  std::memcpy(values.data_ptr(), bytes.data(), std::min(bytes.size(), values.nbytes()));
  return values;
}

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const ql::Error& e) {
    return e.what();
  }
  return "(no error)";
}

class WeightsTest : public ::testing::Test {
 protected:
  WeightsTest() : registry_(std::vector<fs::path>{QL_TEST_PLUGIN_DIR}) {}

  // Writes the three networks' files once for the whole suite.
  static void SetUpTestSuite() {
    files_ = new ql::test::TempDir();
    const auto made = ql::test::run_command(fmt::format("{} {}/tests/weights/make_torchvision_weights.py {} 2>&1",
                                                        QL_TEST_PYTHON, QL_TEST_SOURCE_DIR,
                                                        ql::test::quoted(files_->path().string())));
    ASSERT_EQ(made.exit_code, 0) << made.out;
  }
  static void TearDownTestSuite() {
    delete files_;
    files_ = nullptr;
  }

  std::shared_ptr<ql::Network> build(const std::string& plugin, const std::vector<std::string>& options) {
    ql::DatasetSpec spec;
    spec.input_shape = {3, 224, 224};
    spec.num_classes = 1000;
    const auto& metadata = registry_.find(ql::PluginKind::topology, plugin);
    auto network = registry_.create<ql::Topology>(plugin, ql::core::plugin_options(metadata, options))->build(spec);
    network->eval();
    return network;
  }

  static ql::test::TempDir* files_;
  ql::test::TempDir dir_;
  ql::core::PluginRegistry registry_;
};

ql::test::TempDir* WeightsTest::files_ = nullptr;

}  // namespace

TEST_F(WeightsTest, TorchvisionStateDictsAndSafetensorsGivePyTorchsLogits) {
  const std::vector<std::tuple<std::string, std::string, std::vector<std::string>>> networks{
      {"resnet18", "resnet", {"depth=18", "family=\"imagenet\""}},
      {"vgg11_bn", "vgg", {"config=\"vgg11\"", "batch_norm=true"}},
      {"alexnet", "alexnet", {}}};
  for (const auto& [name, plugin, options] : networks) {
    const at::Tensor input = read_floats(files_->path() / (name + ".input"), {2, 3, 224, 224});
    const at::Tensor expected = read_floats(files_->path() / (name + ".logits"), {2, 1000});
    for (const char* extension : {".pth", ".safetensors"}) {
      SCOPED_TRACE(name + extension);
      const ql::core::WeightsFile file = ql::core::read_weights_file(files_->path() / (name + extension));
      EXPECT_EQ(file.format, std::string(extension) == ".pth" ? ql::core::WeightsFormat::state_dict
                                                              : ql::core::WeightsFormat::safetensors);
      EXPECT_EQ(file.sha256.size(), 64u);
      auto network = build(plugin, options);
      const ql::core::WeightsLoad load = ql::core::load_weights(*network, file.tensors, /*strict=*/true);
      EXPECT_GT(load.loaded, 10u);
      torch::NoGradGuard no_grad;
      const at::Tensor logits = network->apply(input);
      const double difference = (logits - expected).abs().max().item<double>();
      const double scale = std::max(1.0, expected.abs().max().item<double>());
      std::cout << name << extension << ": " << load.loaded << " tensors, largest logit difference " << difference
                << " (of " << scale << ")\n";
      EXPECT_LE(difference, 1e-4 * scale);
    }
  }
}

// bad-input: `[topology] weights` of a file that is no checkpoint, state dict or safetensors; a truncated one; a safetensors header that lies about offsets or dtypes; a state dict of another network | `…: neither a QuantLab checkpoint, a state dict saved with torch.save, nor a .safetensors file`; `…: tensor '…' lies at bytes [0, 1200) of a data section of 600`; `the weights do not fit the network: missing 102: …; unexpected 24: …; other shapes 0 …` | 1
TEST_F(WeightsTest, BadWeightsFilesAreRefusedWithOneLine) {
  ql::test::write_text(dir_ / "notes.txt", "not weights at all");
  EXPECT_NE(error_of([&] { ql::core::read_weights_file(dir_ / "notes.txt"); })
                .find("neither a QuantLab checkpoint, a state dict saved with torch.save, nor a .safetensors file"),
            std::string::npos);
  EXPECT_NE(error_of([&] { ql::core::read_weights_file(dir_ / "missing.pth"); }).find("no such weights file"),
            std::string::npos);
  // Truncated: the state dict's zip and the safetensors data both cut short.
  for (const char* name : {"resnet18.pth", "resnet18.safetensors"}) {
    std::vector<std::uint8_t> bytes = ql::test::read_bytes(files_->path() / name);
    bytes.resize(bytes.size() / 2);
    ql::test::write_bytes(dir_ / name, bytes);
    const std::string error = error_of([&] { ql::core::read_weights_file(dir_ / name); });
    EXPECT_NE(error.find((dir_ / name).string()), std::string::npos) << error;
    EXPECT_EQ(error.find('\n'), std::string::npos) << error;
  }
  // Headers that lie: offsets past the data, a size that does not match the dtype, an unknown dtype.
  const auto safetensors = [](const std::string& header, std::size_t data) {
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[static_cast<std::size_t>(i)] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
    return bytes + header + std::string(data, '\0');
  };
  const std::string beyond = R"({"w":{"dtype":"F32","shape":[300],"data_offsets":[0,1200]}})";
  EXPECT_NE(error_of([&] { ql::core::read_safetensors(safetensors(beyond, 600), "lying"); })
                .find("tensor 'w' lies at bytes [0, 1200) of a data section of 600"),
            std::string::npos);
  const std::string sized = R"({"w":{"dtype":"F64","shape":[300],"data_offsets":[0,1200]}})";
  EXPECT_NE(error_of([&] { ql::core::read_safetensors(safetensors(sized, 1200), "lying"); }).find("needs 2400 bytes"),
            std::string::npos);
  const std::string unknown = R"({"w":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})";
  EXPECT_NE(error_of([&] { ql::core::read_safetensors(safetensors(unknown, 4), "lying"); }).find("dtype 'F8_E4M3'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { ql::core::read_safetensors(safetensors("{not json", 0), "lying"); }).find("not JSON"),
            std::string::npos);
  // Another network's state dict: strict names the first differing tensors and counts them.
  const ql::core::WeightsFile resnet = ql::core::read_weights_file(files_->path() / "resnet18.safetensors");
  auto vgg = build("vgg", {"config=\"vgg11\"", "batch_norm=true"});
  const std::string error = error_of([&] { ql::core::load_weights(*vgg, resnet.tensors, true); });
  EXPECT_NE(error.find("the weights do not fit the network: missing "), std::string::npos) << error;
  EXPECT_NE(error.find("classifier.0.bias"), std::string::npos) << error;
  EXPECT_NE(error.find("bn1.bias"), std::string::npos) << error;
  EXPECT_NE(error.find("unexpected "), std::string::npos) << error;
  // Relaxed: what fits is copied, the rest is listed.
  const ql::core::WeightsLoad relaxed = ql::core::load_weights(*vgg, resnet.tensors, false);
  EXPECT_EQ(relaxed.loaded, 0u);
  EXPECT_FALSE(relaxed.missing.empty());
}

// A unit's kept result as the weights of a quantise-only run (epochs = 0, no training) scores
// exactly what the first run's result scored; unit.toml names the weights and their checksum.
TEST_F(WeightsTest, AUnitsResultStartsAQuantiseOnlyRunWithTheSameAccuracy) {
  ASSERT_TRUE(fs::exists("/usr/share/datasets/fashion-mnist")) << "make deps installs dataset-fashion-mnist";
  const std::string head = R"([experiment]
seed = 3
[storage]
logs = "logs"
[problem]
plugin = "mnist"
max_train_samples = 2000
max_test_samples = 500
)";
  ql::test::write_text(dir_ / "first.toml", head + R"([topology]
plugin = "mlp"
hidden = [32]
[training]
epochs = 1
[[algorithm]]
plugin = "uniform"
bits = 4
sweep = false
)");
  const auto first = ql::test::run_qlhost("run " + ql::test::quoted((dir_ / "first.toml").string()), dir_.path());
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
  const fs::path unit = dir_ / "logs" / "mnist" / "mlp" / "exp0001";
  const ql::core::UnitRecord before = ql::core::read_unit_record(unit);
  ql::test::write_text(dir_ / "second.toml", head + fmt::format(R"([topology]
plugin = "mlp"
hidden = [32]
weights = "{}"
[training]
epochs = 0
)",
                                                                  unit.string()));
  const auto second = ql::test::run_qlhost("run " + ql::test::quoted((dir_ / "second.toml").string()), dir_.path());
  ASSERT_EQ(second.exit_code, 0) << second.out << second.err;
  EXPECT_NE((second.out + second.err).find("result.pt: 4 tensors"), std::string::npos) << second.out << second.err;
  const ql::core::UnitRecord after = ql::core::read_unit_record(dir_ / "logs" / "mnist" / "mlp" / "exp0002");
  EXPECT_EQ(after.folds.at(0).trained_top1, before.folds.at(0).result_top1);
  EXPECT_EQ(after.weights, fs::absolute(unit / "fold0" / "checkpoints" / "result.pt").string());
  EXPECT_EQ(after.weights_sha256.size(), 64u);
}

// The fuzz target's seeds (fuzz/corpus/weights), corrupted at random: flipped bytes, cuts and
// repeats. Every result loads or fails with a ql::Error (the target itself runs under `make fuzz`).
TEST_F(WeightsTest, CorruptedWeightsFilesFailWithAnErrorAndNothingElse) {
  std::mt19937 random(11);
  std::size_t refused = 0, loaded = 0;
  for (const char* seed : {"safetensors_two", "state_dict_linear"}) {
    const std::vector<std::uint8_t> original =
        ql::test::read_bytes(fs::path(QL_TEST_SOURCE_DIR) / "fuzz" / "corpus" / "weights" / seed);
    const bool safetensors = original.at(0) & 1;
    for (int trial = 0; trial < 1500; ++trial) {
      std::string bytes(original.begin() + 1, original.end());
      const int edits = 1 + static_cast<int>(random() % 4);
      for (int e = 0; e < edits && !bytes.empty(); ++e) {
        const std::size_t at = random() % bytes.size();
        switch (random() % 3) {
          case 0: bytes[at] = static_cast<char>(random() % 256); break;
          case 1: bytes.resize(at); break;
          default: bytes.insert(at, bytes.substr(at, random() % 16)); break;
        }
      }
      try {
        if (safetensors) (void)ql::core::read_safetensors(bytes, "corrupt.safetensors");
        else (void)ql::core::read_state_dict(bytes, "corrupt.pth");
        ++loaded;
      } catch (const ql::Error&) {
        ++refused;
      } catch (const std::exception& e) {
        ADD_FAILURE() << seed << " trial " << trial << ": " << typeid(e).name() << ": " << e.what();
      }
    }
  }
  std::cout << refused << " corrupted files refused, " << loaded << " still loaded\n";
  EXPECT_GT(refused, 1000u);
}
