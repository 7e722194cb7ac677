// GPFQ and MSQ (docs/algorithms/greedy.md): alphabets, rounding, the checks listed there
// (check 3), the Gram-matrix path against the definition on data, conv layouts against
// conv2d, and the greedy plugin end to end in qlhost.
#include "plugins/algorithms/greedy/gpfq.hpp"
#include "quantlab/sdk/error.hpp"
#include "support/test_support.hpp"

#include <gtest/gtest.h>

#include <fmt/format.h>
#include <torch/cuda.h>
#include <torch/nn/functional/conv.h>
#include <torch/types.h>

#include <cmath>

namespace fs = std::filesystem;
using namespace ql::greedy;

namespace {

at::Tensor double_tensor(std::vector<double> values) { return torch::tensor(values, torch::kFloat64); }

}  // namespace

TEST(GpfqTest, AlphabetsFollowTheBitCount) {
  EXPECT_TRUE(torch::allclose(alphabet(std::log2(3.0), 2.0), double_tensor({-2, 0, 2})));
  EXPECT_TRUE(torch::allclose(alphabet(2.0, 3.0), double_tensor({-3, -1, 1, 3})));  // no zero
  const at::Tensor eight = alphabet(3.0, 1.0);
  ASSERT_EQ(eight.size(0), 8);
  EXPECT_TRUE(torch::allclose(eight.diff(), torch::full({7}, 2.0 / 7, torch::kFloat64)));
  EXPECT_EQ(alphabet(4.0, 1.0).size(0), 16);
  EXPECT_DOUBLE_EQ(alphabet(4.0, 5.0)[15].item<double>(), 5.0);
  // "2^b levels plus zero": zero joins even alphabets only, in order.
  EXPECT_TRUE(torch::allclose(alphabet(2.0, 3.0, true), double_tensor({-3, -1, 0, 1, 3})));
  EXPECT_TRUE(torch::allclose(alphabet(std::log2(3.0), 2.0, true), double_tensor({-2, 0, 2})));
  const at::Tensor seventeen = alphabet(4.0, 1.0, true);
  ASSERT_EQ(seventeen.size(0), 17);
  EXPECT_EQ(seventeen[8].item<double>(), 0.0);
  EXPECT_TRUE(torch::equal(std::get<0>(seventeen.sort()), seventeen));
}

TEST(GpfqTest, RadiusRulesTakeTheLayerMedianOrTheMeanOfNeuronMaxima) {
  const at::Tensor dense = double_tensor({1, -4, 2, 0.5, -0.25, 3}).view({2, 3});
  EXPECT_DOUBLE_EQ(radius_statistic(RadiusRule::layer_median, dense), 1.0);  // the lower middle of 6 values
  EXPECT_DOUBLE_EQ(radius_statistic(RadiusRule::mean_neuron_max, dense), (4.0 + 3.0) / 2);
  // A convolution's neuron is a whole filter: max over input channels and kernel positions.
  const at::Tensor conv = torch::arange(16, torch::kFloat64).view({2, 2, 2, 2}) - 4;
  EXPECT_DOUBLE_EQ(radius_statistic(RadiusRule::mean_neuron_max, conv), (4.0 + 11.0) / 2);
  EXPECT_THROW(radius_statistic(RadiusRule::mean_neuron_max, double_tensor({1, 2})), ql::Error);
}

// The integer form an export writes: integers times one scale give back every atom; ternary is
// -1, 0, 1 and an even alphabet the odd integers.
TEST(GpfqTest, AlphabetIndicesBecomeIntegersTimesOneScale) {
  for (const bool with_zero : {false, true}) {
    for (const double bits : {std::log2(3.0), 2.0, 3.0, 4.0}) {
      const at::Tensor atoms = ql::greedy::alphabet(bits, 0.37, with_zero);
      const at::Tensor indices = torch::arange(atoms.size(0));
      const ql::IntegerForm form = ql::greedy::alphabet_integers(indices, atoms);
      const at::Tensor values = form.codes.to(torch::kFloat64) * form.scale.to(torch::kFloat64);
      EXPECT_TRUE(torch::allclose(values, atoms, 1e-6, 1e-7)) << bits << " bits";
      const std::int64_t levels = std::llround(std::pow(2.0, bits));
      EXPECT_EQ(form.codes[0].item<std::int64_t>(), levels % 2 == 1 ? -(levels - 1) / 2 : -(levels - 1)) << bits;
      EXPECT_EQ(form.zero_point.item<std::int64_t>(), 0);
      if (with_zero) EXPECT_EQ(form.codes.eq(0).sum().item<std::int64_t>(), 1) << bits;
    }
  }
  // Indices of any shape keep it.
  const ql::IntegerForm shaped = ql::greedy::alphabet_integers(torch::tensor({2, 0, 1, 2}).view({2, 2}), double_tensor({-1, 0, 1}));
  EXPECT_TRUE(torch::equal(shaped.codes, torch::tensor({1, -1, 0, 1}).view({2, 2})));
}

TEST(GpfqTest, RoundingPicksTheNearestAtomAndTheLowerOneOnTies) {
  const at::Tensor atoms = double_tensor({-1, 0, 1});
  const at::Tensor values = double_tensor({-3, -0.5, -0.49, 0.2, 0.5, 0.51, 7});
  EXPECT_TRUE(torch::equal(round_to_alphabet(values, atoms), double_tensor({-1, -1, 0, 0, 0, 1, 1})));
  EXPECT_TRUE(torch::equal(nearest_atom_index(values, atoms), torch::tensor({0, 0, 1, 1, 1, 2, 2}, torch::kInt64)));
}

TEST(GpfqTest, AtomsOnCleanDataAreKeptWithZeroResidual) {
  // greedy.md, check 1: X̃ = X and every weight already an atom => q = w and u = 0.
  torch::manual_seed(3);
  const at::Tensor atoms = alphabet(std::log2(3.0), 0.7);
  const at::Tensor x = torch::randn({1, 300, 20}, torch::kFloat64);
  const at::Tensor w = atoms.index_select(0, torch::randint(0, 3, {20 * 6}, torch::kInt64)).view({1, 20, 6});
  Grams grams(1, 20);
  grams.add(x, x);
  EXPECT_TRUE(torch::equal(gpfq_from_grams(w, grams, atoms), w));
  EXPECT_TRUE(torch::equal(gpfq_on_data(w, x, x, atoms), w));
  EXPECT_LT(residual(w, w, grams).error, 1e-9);
}

TEST(GpfqTest, GramPathEqualsTheDynamicalSystemOnData) {
  torch::manual_seed(7);
  for (double bits : {std::log2(3.0), 2.0, 4.0}) {
    // Two groups, correlated features, X̃ a perturbed X: the general case.
    const at::Tensor mix = torch::randn({2, 24, 24}, torch::kFloat64);
    const at::Tensor x = torch::bmm(torch::randn({2, 500, 24}, torch::kFloat64), mix);
    const at::Tensor x_tilde = x + 0.1 * torch::randn_like(x);
    const at::Tensor w = 0.3 * torch::randn({2, 24, 9}, torch::kFloat64);
    const at::Tensor atoms = alphabet(bits, 3 * w.abs().median().item<double>());
    // Streamed in uneven batches: the Gram matrices must not care.
    Grams grams(2, 24);
    for (std::int64_t begin = 0; begin < 500; begin += 137) {
      grams.add(x.slice(1, begin, std::min<std::int64_t>(500, begin + 137)),
                x_tilde.slice(1, begin, std::min<std::int64_t>(500, begin + 137)));
    }
    EXPECT_EQ(grams.rows, 500);
    const at::Tensor from_grams = gpfq_from_grams(w, grams, atoms);
    const at::Tensor on_data = gpfq_on_data(w, x, x_tilde, atoms);
    EXPECT_LE((from_grams - on_data).abs().max().item<double>(), 1e-5) << "bits " << bits;
    // Every output is an atom.
    EXPECT_TRUE(torch::equal(round_to_alphabet(from_grams, atoms), from_grams));
    // The residual from the Gram matrices is the one on the data.
    const double direct = (torch::bmm(x, w) - torch::bmm(x_tilde, from_grams)).norm().item<double>();
    EXPECT_NEAR(residual(w, from_grams, grams).error, direct, 1e-8 * direct);
    // Greedy path following beats plain rounding on the data (greedy.md, check 2).
    EXPECT_LT(residual(w, from_grams, grams).error, residual(w, round_to_alphabet(w, atoms), grams).error);
  }
}

// On a GPU the Gram matrices accumulate on the device, in float64 as on the CPU, and GPFQ picks
// the same atoms (a code may differ only where a value lies on a midpoint within rounding).
TEST(GpfqTest, OnTheGpuTheGramMatricesAndCodesAreTheCpus) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "LibTorch sees no CUDA device here; bench/gpu/check.sh runs this";
  torch::manual_seed(11);
  const at::Tensor x = torch::randn({3, 700, 32}, torch::kFloat32);
  const at::Tensor x_tilde = x + 0.05 * torch::randn_like(x);
  const at::Tensor w = 0.3 * torch::randn({3, 32, 16}, torch::kFloat64);
  const at::Tensor atoms = alphabet(3.0, 3 * w.abs().median().item<double>());
  Grams on_cpu(3, 32);
  Grams on_gpu(3, 32, c10::Device(c10::kCUDA, 0));
  on_cpu.add(x, x_tilde);
  on_gpu.add(x.cuda(), x_tilde.cuda());
  ASSERT_TRUE(on_gpu.qx.is_cuda());
  EXPECT_EQ(on_gpu.qx.scalar_type(), torch::kFloat64);
  EXPECT_LE((on_gpu.qx.cpu() - on_cpu.qx).abs().max().item<double>(), 1e-9 * on_cpu.qx.abs().max().item<double>());
  const at::Tensor q_cpu = gpfq_from_grams(w, on_cpu, atoms);
  const at::Tensor q_gpu = gpfq_from_grams(w.cuda(), on_gpu, atoms);
  ASSERT_TRUE(q_gpu.is_cuda());
  const double same = q_gpu.cpu().eq(q_cpu).to(torch::kFloat64).mean().item<double>();
  EXPECT_GE(same, 0.999);
}

TEST(GpfqTest, ConvRowsTimesNeuronsIsTheConvolution) {
  torch::manual_seed(11);
  ql::nn::Conv2dOptions o(4, 6, 3);
  o.stride = {2, 1};
  o.padding = {1, 2};
  o.dilation = {1, 2};
  o.groups = 2;
  o.kernel_size = {3, 2};
  const at::Tensor input = torch::randn({3, 4, 9, 8}, torch::kFloat64);
  const at::Tensor weight = torch::randn({6, 2, 3, 2}, torch::kFloat64);
  namespace F = torch::nn::functional;
  const at::Tensor expected = F::conv2d(input, weight, F::Conv2dFuncOptions().stride({2, 1}).padding({1, 2})
                                                          .dilation({1, 2}).groups(2));
  const std::int64_t positions = expected.size(2) * expected.size(3);
  for (ConvScheme scheme : {ConvScheme::channelwise, ConvScheme::full}) {
    const at::Tensor rows = conv_rows(input, o, scheme);      // [G, B*L, N]
    const at::Tensor neurons = conv_neurons(weight, o, scheme);  // [G, N, F]
    EXPECT_TRUE(torch::equal(conv_weight(neurons, o, scheme), weight));
    // Each group's partial outputs, summed into the filters of its conv group.
    const at::Tensor partial = torch::bmm(rows, neurons);  // [G, B*L, F]
    at::Tensor output = torch::zeros({3 * positions, 6}, torch::kFloat64);
    for (std::int64_t g = 0; g < rows.size(0); ++g) {
      const std::int64_t conv_group = scheme == ConvScheme::full ? g : g / 2;
      output.slice(1, conv_group * 3, conv_group * 3 + 3) += partial[g];
    }
    const at::Tensor as_conv = output.view({3, positions, 6}).permute({0, 2, 1}).reshape(expected.sizes());
    EXPECT_TRUE(torch::allclose(as_conv, expected, 1e-10, 1e-10)) << (scheme == ConvScheme::full ? "full" : "channelwise");
  }
  // A subset of positions keeps whole patches (the same ones for the same seed).
  const at::Tensor some = conv_rows(input, o, ConvScheme::full, 5, 42);
  EXPECT_EQ(some.size(1), 3 * 5);
  EXPECT_TRUE(torch::equal(some, conv_rows(input, o, ConvScheme::full, 5, 42)));
}

class GreedyPluginTest : public ::testing::Test {
 protected:
  ql::test::TempDir dir_;
};

// The dense network with the default alphabet (ternary, layer median); the convnet with the
// ImageNet rule (2 bits plus zero: 5 atoms, radius from the neurons' maxima).
TEST_F(GreedyPluginTest, QuantisesDenseAndConvNetworksAndExportsCodes) {
  struct Case {
    const char* name;
    const char* topology;
    const char* alphabet;
    int layers, levels;
  };
  const Case cases[] = {
      {"mlp", "plugin = \"mlp\"\nhidden = [32, 16]\nbatch_norm = true", "", 3, 3},
      {"convnet", "plugin = \"convnet\"", "bits = 2.0\nalphabet_zero = true\nalphabet_radius = \"mean_neuron_max\"", 8, 5}};
  ql::test::write_idx_dataset(dir_ / "data", 600, 200, 16, 4, /*gzip=*/false);
  for (const Case& c : cases) {
    ql::test::write_text(dir_ / "exp.toml", fmt::format(R"([storage]
logs = "logs"
[problem]
plugin = "mnist"
data_dir = "{}"
image_size = [16, 16]
classes = 4
[topology]
{}
[training]
epochs = 2
batch_size = 32
[[algorithm]]
plugin = "greedy"
alphabet_scalar = 2.0
calibration_samples = 300
max_patches_per_image = 20
sweep_alphabet_scalars = [2.0, 4.0]
sweep_bits = [1.584962500721156, 3.0]
{}
)",
                                                        (dir_ / "data").string(), c.topology, c.alphabet));
    const auto run = ql::test::run_qlhost("run " + ql::test::quoted((dir_ / "exp.toml").string()), dir_.path());
    ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
    EXPECT_NE(run.out.find("| gpfq 1.58 bits C=2 | gpfq | 1.58496 | 2 |"), std::string::npos) << run.out;
    EXPECT_NE(run.out.find("| msq 3 bits C=4 | msq | 3 | 4 |"), std::string::npos) << run.out;

    const fs::path fold = dir_ / "logs/mnist" / c.name / "exp0001/fold0";
    ASSERT_TRUE(fs::exists(fold / "greedy/quantized.h5")) << fold;
    // The export read by h5py: every layer, its codes within the alphabet, the alphabet
    // symmetric with zero and equal to unit x atom_integers.
    const auto check = ql::test::run_command(fmt::format(
        "/usr/bin/python3 -c {} {} {}", ql::test::quoted(R"(
import sys, h5py, numpy as np
h5 = h5py.File(sys.argv[1], 'r')
levels = int(sys.argv[2])
assert h5.attrs['method'] in (b'gpfq', 'gpfq'), h5.attrs['method']
n = 0
for name, group in h5.items():
    codes, atoms = group['codes'][()], group['atoms'][()]
    assert group.attrs['levels'] == levels and len(atoms) == levels, (name, atoms)
    assert codes.min() >= 0 and codes.max() <= levels - 1, name
    assert np.allclose(atoms, -atoms[::-1]) and abs(atoms[levels // 2]) < 1e-12, (name, atoms)
    assert np.allclose(group['atom_integers'][()] * group.attrs['unit'], atoms), name
    assert ('scale' in group.attrs) == (levels == 3), name
    n += 1
print('layers', n)
)"),
        ql::test::quoted((fold / "greedy/quantized.h5").string()), c.levels));
    EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
    EXPECT_NE(check.out.find(fmt::format("layers {}\n", c.layers)), std::string::npos) << check.out;
    EXPECT_TRUE(fs::exists(fold / "greedy/tables/data_error.csv"));
  }
}
