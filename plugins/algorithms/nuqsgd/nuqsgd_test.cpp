// Gradient quantisation (docs/algorithms/nuqsgd.md): level sets, unbiased stochastic rounding,
// outputs on norm x levels, the packed wire format, and simulated data-parallel training.
#include "plugins/algorithms/nuqsgd/adaptive_levels.hpp"
#include "plugins/algorithms/nuqsgd/gradient_quantizer.hpp"
#include "quantlab/sdk/error.hpp"
#include "support/test_support.hpp"

#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/cuda.h>
#include <torch/types.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>

namespace fs = std::filesystem;
using namespace ql::nuqsgd;

TEST(NuqsgdTest, LevelSetsOfEachScheme) {
  EXPECT_EQ(level_set(Scheme::nuq, 3), (std::vector<double>{-1, -0.5, -0.25, -0.125, 0.125, 0.25, 0.5, 1}));
  const auto qsgd = level_set(Scheme::qsgd, 2);
  ASSERT_EQ(qsgd.size(), 4u);
  EXPECT_NEAR(qsgd[1], -1.0 / 3, 1e-15);
  EXPECT_NEAR(qsgd[2], 1.0 / 3, 1e-15);
  EXPECT_EQ(level_set(Scheme::trn, 5), (std::vector<double>{-1, 0, 1}));
  EXPECT_EQ(level_set(Scheme::nuq, 4).size(), 16u);
  EXPECT_DOUBLE_EQ(level_set(Scheme::nuq, 4)[8], std::pow(0.5, 7));
  EXPECT_EQ(code_bits(3), 2);
  EXPECT_EQ(code_bits(8), 3);
  EXPECT_THROW(level_set(Scheme::alq, 3), ql::Error);
}

TEST(NuqsgdTest, OutputsLieOnNormTimesLevelsAndThePartialBucketIsExact) {
  for (const auto& [scheme, bits] : std::vector<std::pair<Scheme, int>>{{Scheme::nuq, 3}, {Scheme::qsgd, 4}, {Scheme::qsgdinf, 3}, {Scheme::trn, 2}}) {
    const bool l2 = uses_l2_norm(scheme);
    GradientQuantizer q(level_set(scheme, bits), l2, 100);
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(7);
    const at::Tensor g = torch::randn({1037});
    const std::vector<std::uint8_t> wire = q.encode(g, generator);
    EXPECT_EQ(static_cast<std::int64_t>(wire.size()), q.encoded_size(1037));
    // 10 buckets: a norm and ceil(100 / 8) groups of `bits` bytes each; 37 values sent as fp32.
    EXPECT_EQ(wire.size(), 10u * (4 + 13 * static_cast<std::size_t>(code_bits(level_set(scheme, bits).size()))) + 37u * 4);
    const at::Tensor back = q.decode(wire, 1037);
    EXPECT_TRUE(torch::equal(back.slice(0, 1000), g.slice(0, 1000))) << to_string(scheme);
    const at::Tensor levels = torch::tensor(level_set(scheme, bits), torch::kFloat32);
    for (int b = 0; b < 10; ++b) {
      const at::Tensor bucket = g.slice(0, b * 100, (b + 1) * 100);
      const float norm = l2 ? bucket.norm().item<float>() : bucket.abs().max().item<float>();
      const at::Tensor ratios = back.slice(0, b * 100, (b + 1) * 100) / norm;
      // Each ratio is one of the levels (to float rounding).
      const at::Tensor distance = (ratios.unsqueeze(1) - levels.unsqueeze(0)).abs().amin(1);
      EXPECT_LT(distance.max().item<float>(), 1e-5) << to_string(scheme) << " bucket " << b;
    }
    // The same generator state gives the same bits.
    at::Generator again = at::make_generator<at::CPUGeneratorImpl>(7);
    EXPECT_EQ(q.encode(g, again), wire);
  }
  GradientQuantizer q(level_set(Scheme::nuq, 3), true, 8);
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(1);
  EXPECT_THROW(q.decode(std::vector<std::uint8_t>(5), 16), ql::Error);
}

// Quantizers that take each of the encoder's level paths (NUQSGD's ±2^-j, equispaced, the
// search table, level by level), both norms, and buckets that end in a partial group of codes.
std::vector<GradientQuantizer> quantizers_of_every_path() {
  std::vector<GradientQuantizer> quantizers;
  for (int bits : {2, 3, 4, 6}) quantizers.emplace_back(level_set(Scheme::nuq, bits), true, 100);
  quantizers.emplace_back(level_set(Scheme::qsgd, 1), true, 64);
  quantizers.emplace_back(level_set(Scheme::qsgdinf, 4), false, 100);
  quantizers.emplace_back(level_set(Scheme::trn, 2), false, 7);
  quantizers.emplace_back(level_set(Scheme::nuq, 3, 0.3), true, 100);              // table
  quantizers.emplace_back(std::vector<double>{-1, -1e-6, 0, 1e-6, 1}, true, 100);  // level by level
  return quantizers;
}

// A gradient with many tiny values and exact zeros, 37 of them past the last full bucket.
at::Tensor awkward_gradient(std::int64_t bucket_size) {
  torch::manual_seed(17);
  const std::int64_t numel = 10 * bucket_size + 37;
  at::Tensor g = torch::randn({numel}) * torch::rand({numel}).pow(4);
  g.slice(0, 0, 9).fill_(0.0f);
  return g;
}

// What the CUDA kernels compute (cuda_codec.cu), thread by thread, on the host: the norms
// from eight lanes, each group of eight codes, the tail as it is.
std::vector<std::uint8_t> encode_as_the_kernels_do(const GradientQuantizer& q, const at::Tensor& g,
                                                   std::uint64_t base) {
  const coding::LevelTables tables = q.host_tables();
  const std::int64_t d = q.bucket_size(), buckets = g.numel() / d, groups = (d + 7) / 8;
  const float* values = g.data_ptr<float>();
  std::vector<std::uint8_t> out(static_cast<std::size_t>(q.encoded_size(g.numel())));
  std::uint8_t* codes = out.data() + buckets * 4;
  for (std::int64_t b = 0; b < buckets; ++b) {
    float lanes[8];
    for (int lane = 0; lane < 8; ++lane) lanes[lane] = coding::lane_total(values + b * d, d, lane, q.l2_norm());
    const float norm = coding::combine_lanes(lanes, q.l2_norm());
    std::memcpy(out.data() + b * 4, &norm, 4);
    for (std::int64_t group = 0; group < groups; ++group) {
      coding::encode_group(values + b * d, d, group, 1.0f / (norm + 1e-7f), coding::bucket_seed(base, b), tables,
                           codes + b * groups * q.bits() + group * q.bits());
    }
  }
  const std::int64_t coded = buckets * d;
  std::memcpy(codes + buckets * groups * q.bits(), values + coded, static_cast<std::size_t>(g.numel() - coded) * 4);
  return out;
}

void decode_add_as_the_kernels_do(const GradientQuantizer& q, const std::vector<std::uint8_t>& wire, float weight,
                                  at::Tensor& sum) {
  const std::int64_t d = q.bucket_size(), buckets = sum.numel() / d, groups = (d + 7) / 8;
  float* out = sum.data_ptr<float>();
  const std::uint8_t* codes = wire.data() + buckets * 4;
  for (std::int64_t b = 0; b < buckets; ++b) {
    float norm;
    std::memcpy(&norm, wire.data() + b * 4, 4);
    for (std::int64_t group = 0; group < groups; ++group) {
      coding::decode_add_group(codes + b * groups * q.bits(), d, group, norm * weight, q.host_tables().levels,
                               q.host_tables().count, q.bits(), out + b * d + group * 8);
    }
  }
  for (std::int64_t i = buckets * d; i < sum.numel(); ++i) {
    float value;
    std::memcpy(&value, codes + buckets * groups * q.bits() + (i - buckets * d) * 4, 4);
    out[i] += weight * value;
  }
}

// The kernels' arithmetic, run on the host, writes the CPU encoder's stream byte for byte and
// decodes it to the CPU decoder's values: the GPU test below then only has the launches left.
TEST(NuqsgdTest, TheCudaKernelsArithmeticWritesTheCpuStream) {
  for (const GradientQuantizer& q : quantizers_of_every_path()) {
    const std::string name = fmt::format("{} levels, buckets of {}", q.levels().size(), q.bucket_size());
    const at::Tensor g = awkward_gradient(q.bucket_size());
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(5);
    const std::vector<std::uint8_t> from_cpu = q.encode(g, generator);
    at::Generator same = at::make_generator<at::CPUGeneratorImpl>(5);
    const std::uint64_t base = same.get<at::CPUGeneratorImpl>()->random64();
    EXPECT_EQ(encode_as_the_kernels_do(q, g, base), from_cpu) << name;
    at::Tensor by_cpu = torch::randn({g.numel()}), by_kernels = by_cpu.clone();
    q.decode_add(from_cpu, by_cpu, 0.37f);
    decode_add_as_the_kernels_do(q, from_cpu, 0.37f, by_kernels);
    EXPECT_TRUE(torch::equal(by_kernels, by_cpu)) << name;
  }
}

// On a GPU the kernels themselves: the stream of a GPU gradient is its CPU copy's, and a GPU
// sum decodes to what the CPU decodes, so ranks on either device decode each other alike.
TEST(NuqsgdTest, AGpuGradientEncodesToTheCpuStream) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "LibTorch sees no CUDA device here; bench/gpu/check.sh runs this";
  for (const GradientQuantizer& q : quantizers_of_every_path()) {
    const std::string name = fmt::format("{} levels, buckets of {}", q.levels().size(), q.bucket_size());
    const at::Tensor g = awkward_gradient(q.bucket_size());
    at::Generator a = at::make_generator<at::CPUGeneratorImpl>(3), b = at::make_generator<at::CPUGeneratorImpl>(3);
    const std::vector<std::uint8_t> from_cpu = q.encode(g, a, /*worker=*/2);
    const std::vector<std::uint8_t> from_gpu = q.encode(g.cuda(), b, /*worker=*/2);
    EXPECT_EQ(from_gpu, from_cpu) << name;
    at::Tensor on_cpu = torch::randn({g.numel()});
    at::Tensor on_gpu = on_cpu.cuda();
    q.decode_add(from_gpu, on_cpu, 0.37f);
    q.decode_add(from_gpu, on_gpu, 0.37f);
    EXPECT_TRUE(torch::equal(on_gpu.cpu(), on_cpu)) << name;
  }
}

// A diverged training's gradient (1e20: its bucket's squared norm overflows float32) is refused
// when it is encoded, saying what happened, instead of reaching the receivers as NaN.
// bad-input: a gradient that is not finite or overflows float32 (training diverged) | `gradient codec: bucket 1 of 3 has norm inf: the gradient is not finite or too large for float32, i.e. training diverged (…)` | 1
TEST(NuqsgdTest, ADivergedGradientIsRefusedWhenEncoded) {
  GradientQuantizer q(level_set(Scheme::nuq, 3), true, 100);
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(7);
  at::Tensor gradient = torch::randn({300});
  gradient[150] = 1e20f;
  try {
    (void)q.encode(gradient, generator);
    ADD_FAILURE() << "a gradient whose norm overflows was encoded";
  } catch (const ql::Error& e) {
    EXPECT_NE(std::string(e.what()).find("bucket 1 of 3 has norm inf: the gradient is not finite or too large for "
                                         "float32, i.e. training diverged"),
              std::string::npos)
        << e.what();
  }
  gradient[150] = 1e10f;  // large, but its norm is finite
  EXPECT_NO_THROW((void)q.encode(gradient, generator));
}

// bad-input: a corrupt gradient stream (wrong size, a bucket norm that is NaN, infinite or negative, a non-finite unquantised value) | `encoded gradient: bucket 1 of 10 has norm nan (a corrupt stream, or a gradient that was not finite)` | 1
TEST(NuqsgdTest, CorruptStreamsAreRefusedWithTheirReason) {
  GradientQuantizer q(level_set(Scheme::nuq, 3), true, 100);
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(7);
  const std::vector<std::uint8_t> wire = q.encode(torch::randn({1037}), generator);
  auto refused = [&](std::vector<std::uint8_t> bytes, const std::string& why) {
    try {
      (void)q.decode(bytes, 1037);
    } catch (const ql::Error& e) {
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
      at::Tensor sum = torch::zeros({1037});
      EXPECT_THROW(q.decode_add(bytes, sum), ql::Error) << why;
      EXPECT_TRUE(torch::equal(sum, torch::zeros({1037}))) << "decode_add wrote before refusing: " << why;
      return;
    }
    ADD_FAILURE() << "accepted: " << why;
  };
  auto with_float = [&](std::size_t at, float value) {
    std::vector<std::uint8_t> bytes = wire;
    std::memcpy(bytes.data() + at, &value, 4);
    return bytes;
  };
  refused(std::vector<std::uint8_t>(wire.begin(), wire.end() - 1), "expected");
  refused(with_float(4, std::nanf("")), "bucket 1 of 10 has norm nan");
  refused(with_float(0, std::numeric_limits<float>::infinity()), "bucket 0 of 10 has norm inf");
  refused(with_float(36, -1.0f), "bucket 9 of 10 has norm -1");
  refused(with_float(wire.size() - 4, std::nanf("")), "unquantised value 1036 is nan");
  EXPECT_NO_THROW((void)q.decode(wire, 1037));
}

// What fuzz/fuzz_codec.cpp does, briefly, in every test run: streams with flipped bytes and
// wrong lengths either decode to finite values or are refused with a ql::Error.
TEST(NuqsgdTest, MutatedStreamsDecodeToFiniteValuesOrAreRefused) {
  std::mt19937 engine(11);
  int refused = 0, decoded = 0;
  for (const auto& [scheme, bits] : std::vector<std::pair<Scheme, int>>{{Scheme::nuq, 3}, {Scheme::qsgd, 4}, {Scheme::trn, 2}}) {
    GradientQuantizer q(level_set(scheme, bits), uses_l2_norm(scheme), 64);
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(3);
    const std::vector<std::uint8_t> wire = q.encode(torch::randn({300}), generator);
    for (int trial = 0; trial < 1000; ++trial) {
      std::vector<std::uint8_t> bytes = wire;
      const int flips = 1 + static_cast<int>(engine() % 4);
      for (int f = 0; f < flips; ++f) bytes[engine() % bytes.size()] = static_cast<std::uint8_t>(engine());
      if (engine() % 8 == 0) bytes.resize(engine() % (bytes.size() + 8));
      try {
        EXPECT_TRUE(torch::isfinite(q.decode(bytes, 300)).all().item<bool>()) << to_string(scheme) << " trial " << trial;
        ++decoded;
      } catch (const ql::Error&) {
        ++refused;
      }
    }
  }
  EXPECT_GT(refused, 100);
  EXPECT_GT(decoded, 100);
}

TEST(NuqsgdTest, StochasticRoundingIsUnbiased) {
  // E[Q(g)] = g: the Monte-Carlo mean's error shrinks like 1/sqrt(samples).
  torch::manual_seed(3);
  const at::Tensor g = torch::randn({256});
  for (const auto& [scheme, bits] : std::vector<std::pair<Scheme, int>>{{Scheme::nuq, 3}, {Scheme::qsgd, 2}, {Scheme::qsgdinf, 3}, {Scheme::trn, 2}}) {
    GradientQuantizer q(level_set(scheme, bits), uses_l2_norm(scheme), 64);
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(11);
    std::vector<double> errors;
    at::Tensor sum = torch::zeros_like(g);
    std::int64_t done = 0;
    for (std::int64_t samples : {100, 1600}) {
      for (; done < samples; ++done) sum += q.quantize(g, generator);
      errors.push_back((sum / static_cast<double>(samples) - g).abs().max().item<double>());
    }
    EXPECT_LT(errors[1], errors[0] * 0.5) << to_string(scheme);  // 16x the samples: about a quarter of the error
    EXPECT_LT(errors[1], 0.25 * g.abs().max().item<double>()) << to_string(scheme);
  }
}

TEST(NuqsgdTest, EveryLevelSearchGivesTheSameCodes) {
  // The encoder finds a value's level directly for equispaced sets and for NUQSGD's ±2^-j (with
  // AVX2 intrinsics where the CPU has them), else through a table. The same levels nudged by
  // 1e-9 (equal as floats, but no longer recognised) take the table path: the codes must agree
  // but for values within float rounding of a level (none expected here).
  torch::manual_seed(5);
  at::Tensor g = torch::randn({64 * 257}) * torch::rand({64 * 257}).pow(4);  // many tiny values
  g.slice(0, 0, 16).fill_(0.0f);                                          // and exact zeros
  for (const auto& [scheme, bits] : std::vector<std::pair<Scheme, int>>{{Scheme::nuq, 2}, {Scheme::nuq, 3}, {Scheme::nuq, 4}, {Scheme::nuq, 6}, {Scheme::qsgd, 3}, {Scheme::qsgdinf, 4}, {Scheme::trn, 2}}) {
    const std::vector<double> levels = level_set(scheme, bits);
    std::vector<double> nudged = levels;
    for (std::size_t j = 1; j + 1 < nudged.size(); ++j) nudged[j] *= 1.0 + 1e-9;
    const bool l2 = uses_l2_norm(scheme);
    GradientQuantizer direct(levels, l2, 64), searched(nudged, l2, 64);
    at::Generator a = at::make_generator<at::CPUGeneratorImpl>(3), b = at::make_generator<at::CPUGeneratorImpl>(3);
    const at::Tensor from_direct = direct.decode(direct.encode(g, a), g.numel());
    const at::Tensor from_search = searched.decode(searched.encode(g, b), g.numel());
    const auto differing = (from_direct != from_search).sum().item<std::int64_t>();
    EXPECT_LE(differing, g.numel() / 10000) << to_string(scheme) << " " << bits << " bits";
  }
}

TEST(NuqsgdTest, SimulatedWorkersWithoutQuantisationEqualOneLargeBatch) {
  // Four workers of 8 samples, full precision, average their gradients: the same step as one
  // batch of 32 (the loss is a mean over equal batches), so the same weights up to rounding.
  ql::test::TempDir dir;
  ql::test::write_idx_dataset(dir / "data", 640, 64, 8, 4, /*gzip=*/false);
  ql::test::write_text(dir / "exp.toml", fmt::format(R"([storage]
logs = "logs"
[problem]
plugin = "mnist"
data_dir = "{}"
image_size = [8, 8]
classes = 4
[topology]
plugin = "mlp"
hidden = [16]
[training]
epochs = 2
[training.optimizer]
name = "sgd"
lr = 0.1
[run]
threads = 1
)",
                                                     (dir / "data").string()));
  const std::string exp = ql::test::quoted((dir / "exp.toml").string());
  const auto one = ql::test::run_qlhost(fmt::format("run {} --set training.batch_size=32", exp), dir.path());
  ASSERT_EQ(one.exit_code, 0) << one.err;
  ql::test::write_text(dir / "codec.toml", ql::test::read_text(dir / "exp.toml") +
                                               "[[algorithm]]\nplugin = \"nuqsgd\"\nscheme = \"none\"\n");
  const auto four = ql::test::run_qlhost(
      fmt::format("run {} --set training.batch_size=8 --set training.simulated_workers=4",
                  ql::test::quoted((dir / "codec.toml").string())),
      dir.path());
  ASSERT_EQ(four.exit_code, 0) << four.err;
  EXPECT_NE(four.out.find("32.00 bits/coord"), std::string::npos) << four.out;
  auto weights = [](const fs::path& file) { return ql::test::checkpoint_model(file).at("model/fc1.weight"); };
  const at::Tensor a = weights(dir / "logs/mnist/mlp/exp0001/fold0/checkpoints/last.pt");
  const at::Tensor b = weights(dir / "logs/mnist/mlp/exp0002/fold0/checkpoints/last.pt");
  EXPECT_TRUE(torch::allclose(a, b, 1e-4, 1e-5)) << (a - b).abs().max().item<double>();

  // 3-bit NUQSGD: about 3 bits a coordinate on the wire, and it still learns.
  ql::test::write_text(dir / "nuq.toml", ql::test::read_text(dir / "exp.toml") +
                                             "[[algorithm]]\nplugin = \"nuqsgd\"\nscheme = \"nuq\"\nbits = 3\nbucket_size = 64\n");
  const auto nuq = ql::test::run_qlhost(
      fmt::format("run {} --set training.batch_size=8 --set training.simulated_workers=4 --set training.epochs=4",
                  ql::test::quoted((dir / "nuq.toml").string())),
      dir.path());
  ASSERT_EQ(nuq.exit_code, 0) << nuq.err;
  // 1108 parameters: 17 buckets of 64 at 3 bits + a 32-bit norm each, the last 20 as fp32.
  EXPECT_NE(nuq.out.find("4.01 bits/coord"), std::string::npos) << nuq.out;
  const auto at = nuq.out.find("trained network on test: loss ");
  ASSERT_NE(at, std::string::npos) << nuq.out;
  EXPECT_GT(std::stod(nuq.out.substr(nuq.out.find("top1 ", at) + 5)), 80.0) << nuq.out;
}

TEST(NuqsgdTest, AdaptiveLevelsNeverRaiseTheVarianceObjective) {
  torch::manual_seed(5);
  // Gradients whose normalised buckets are roughly normal with a small spread, as real ones.
  BucketStatistics stats;
  for (int sample = 0; sample < 4; ++sample) stats.add(torch::randn({64 * 256}) * torch::rand({64 * 256}), 256);
  ASSERT_EQ(stats.buckets.size(), 256u);
  for (bool norm_based : {false, true}) {
    const Density f = density(stats, norm_based, 50, 4096);
    EXPECT_NEAR(std::accumulate(f.mass.begin(), f.mass.end(), 0.0), 1.0, 1e-9);
    // Coordinate descent from NUQSGD's levels, with each update rule: V never increases, sweep
    // after sweep, and every rule lowers it.
    const double start = variance_objective(exponential_levels(8, 0.5), f);
    for (const AlqUpdate update : {AlqUpdate::closed_form, AlqUpdate::gradient, AlqUpdate::projected}) {
      std::vector<double> levels = exponential_levels(8, 0.5);
      double previous = start;
      for (int sweep = 0; sweep < 10; ++sweep) {
        alq_sweep(levels, f, update);
        const double v = variance_objective(levels, f);
        EXPECT_LE(v, previous + 1e-15) << "sweep " << sweep << " update " << static_cast<int>(update);
        previous = v;
        EXPECT_TRUE(std::is_sorted(levels.begin(), levels.end()));
        EXPECT_EQ(levels.front(), -1.0);
        EXPECT_EQ(levels.back(), 1.0);
      }
      EXPECT_LT(previous, 0.9 * start) << "update " << static_cast<int>(update);
    }
    // V_loc is the part of V that a level moves: its central difference matches V's change.
    const double a = -0.2, l = 0.01, b = 0.3, h = 1e-4;
    const double numeric = (local_objective(a, l + h, b, f) - local_objective(a, l - h, b, f)) / (2 * h);
    std::vector<double> around{-1.0, a, l, b, 1.0};
    std::vector<double> nudged = around;
    nudged[2] += h;
    EXPECT_NEAR(variance_objective(nudged, f) - variance_objective(around, f), numeric * h, std::fabs(numeric * h) * 0.1 + 1e-9);
    // Adapted levels beat the fixed schemes on the density they were fitted to.
    const double alq = variance_objective(alq_levels(8, f, 30), f);
    double p = 0;
    const double amq = variance_objective(amq_levels(8, f, &p), f);
    EXPECT_LT(alq, variance_objective(exponential_levels(8, 0.5), f));
    EXPECT_LT(alq, variance_objective(level_set(Scheme::qsgd, 3), f));
    EXPECT_LE(amq, variance_objective(exponential_levels(8, 0.5), f));
    EXPECT_GT(p, 0.0);
    EXPECT_LT(p, 1.0);
  }
}
