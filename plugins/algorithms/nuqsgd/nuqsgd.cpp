// The nuqsgd algorithm: stochastic gradient quantisation for data-parallel SGD
// (docs/algorithms/nuqsgd.md): NUQSGD's exponential levels, QSGD (L2 or L-infinity norm),
// TernGrad-like ternary, adaptive ALQ/AMQ levels, or full precision. Its gradient codec turns
// each worker's gradient into the packed bit stream the workers would exchange; with [training]
// simulated_workers = M the host averages M such gradients per step, as the papers'
// single-machine runs do.
#include "adaptive_levels.hpp"
#include "gradient_quantizer.hpp"

#include "quantlab/sdk/algorithm.hpp"
#include "quantlab/sdk/config.hpp"
#include "quantlab/sdk/context.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/plugin.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/types.h>

#include <fmt/format.h>

#include <cstring>
#include <optional>
#include <sstream>

namespace {

using ql::nuqsgd::GradientQuantizer;

constexpr char kOptions[] = R"toml(
scheme = "nuq"          # nuq: levels ±multiplier^j (NUQSGD) | qsgd: 2^bits equispaced levels, L2 norm | qsgdinf: the same with the max-abs norm | trn: {-1, 0, 1}, max-abs norm | alq, alq_n: levels adapted by coordinate descent to the norm-based / norm-less gradient model | amq, amq_n: the multiplier of exponential levels adapted likewise | none: full precision (the SGD baseline)
bits = 3                # levels 2^bits (nuq, qsgd, qsgdinf); each coordinate takes ceil(log2 levels) bits on the wire
multiplier = 0.5        # nuq: the ratio p of neighbouring levels
bucket_size = 8192      # coordinates sharing one fp32 norm; the last, partial bucket is sent unquantised
update_steps = "100,2000,10000"  # alq/amq: gather gradient statistics and adapt the levels after step 0, i1, i2 and every i3 steps ("i1,i2,every")
statistics_buckets = 50 # alq/amq (norm-based): the buckets with the largest norms that make the density mixture
cd_sweeps = 30          # alq: coordinate-descent sweeps over the levels
alq_update = "closed_form"  # alq: how a sweep moves a level: closed_form (F^-1 of the optimality condition) | gradient (10 descent steps on a central difference, the paper runs) | projected (ALQ-G: one clipped step)
)toml";

class QuantizingCodec : public ql::GradientCodec {
 public:
  QuantizingCodec(GradientQuantizer quantizer, std::uint64_t seed)
      : quantizer_(std::move(quantizer)), generator_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}
  std::vector<std::uint8_t> encode(const at::Tensor& bucket) override {
    return quantizer_.encode(bucket, generator_, worker_);
  }
  at::Tensor decode(const std::vector<std::uint8_t>& encoded, std::int64_t numel) override {
    return quantizer_.decode(encoded, numel);
  }
  void decode_add(const std::vector<std::uint8_t>& encoded, double weight, at::Tensor& sum) override {
    quantizer_.decode_add(encoded, sum, static_cast<float>(weight));
  }
  void set_worker(int worker, int /*workers*/) override { worker_ = static_cast<std::uint64_t>(worker); }
  at::Generator& generator() { return generator_; }

 private:
  GradientQuantizer quantizer_;
  at::Generator generator_;
  std::uint64_t worker_ = 0;
};

// Full precision: the fp32 values themselves.
class FullPrecisionCodec : public ql::GradientCodec {
 public:
  std::vector<std::uint8_t> encode(const at::Tensor& bucket) override {
    const at::Tensor values = bucket.to(torch::kCPU, torch::kFloat32).contiguous();
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(values.data_ptr<float>());
    return std::vector<std::uint8_t>(bytes, bytes + values.numel() * 4);
  }
  at::Tensor decode(const std::vector<std::uint8_t>& encoded, std::int64_t numel) override {
    QL_CHECK(static_cast<std::int64_t>(encoded.size()) == numel * 4, "fp32 gradient of {} bytes for {} values",
             encoded.size(), numel);
    at::Tensor values = torch::empty({numel}, torch::kFloat32);
    std::memcpy(values.data_ptr<float>(), encoded.data(), encoded.size());
    return values;
  }
};

// ALQ/AMQ: the levels change; statistics are gathered from every worker's gradient of the step
// that follows an update point (the host shows them to observe()), then the levels are adapted (docs/algorithms/nuqsgd.md).
class AdaptiveCodec : public ql::GradientCodec {
 public:
  AdaptiveCodec(bool alq, bool norm_based, int bits, std::int64_t bucket_size, std::int64_t statistics_buckets,
                int sweeps, ql::nuqsgd::AlqUpdate update, std::uint64_t seed)
      : alq_(alq), norm_based_(norm_based), count_(std::size_t{1} << bits), bucket_size_(bucket_size),
        statistics_buckets_(statistics_buckets), sweeps_(sweeps), update_(update),
        generator_(at::make_generator<at::CPUGeneratorImpl>(seed)) {
    set_levels(ql::nuqsgd::exponential_levels(count_, 0.5));  // NUQSGD's until the first statistics
  }
  std::vector<std::uint8_t> encode(const at::Tensor& bucket) override {
    return quantizer_->encode(bucket, generator_, worker_);
  }
  at::Tensor decode(const std::vector<std::uint8_t>& encoded, std::int64_t numel) override {
    return quantizer_->decode(encoded, numel);
  }
  void decode_add(const std::vector<std::uint8_t>& encoded, double weight, at::Tensor& sum) override {
    quantizer_->decode_add(encoded, sum, static_cast<float>(weight));
  }
  bool wants_gradients() const override { return gathering_; }
  void observe(const at::Tensor& gradient) override {
    if (gathering_) statistics_.add(gradient, bucket_size_);
  }
  void set_worker(int worker, int /*workers*/) override { worker_ = static_cast<std::uint64_t>(worker); }
  void start_gathering() { gathering_ = true; }
  // Adapts the levels to what was gathered; returns V(L) before and after (or nothing).
  std::optional<std::pair<double, double>> adapt() {
    gathering_ = false;
    if (statistics_.empty()) return std::nullopt;
    const ql::nuqsgd::Density f = ql::nuqsgd::density(statistics_, norm_based_, statistics_buckets_);
    statistics_ = {};
    const double before = ql::nuqsgd::variance_objective(levels_, f);
    std::vector<double> levels = alq_ ? ql::nuqsgd::alq_levels(count_, f, sweeps_, update_)
                                      : ql::nuqsgd::amq_levels(count_, f, &multiplier_);
    const double after = ql::nuqsgd::variance_objective(levels, f);
    if (after <= before) set_levels(std::move(levels));
    return std::make_pair(before, std::min(before, after));
  }
  const std::vector<double>& levels() const { return levels_; }
  void set_levels(std::vector<double> levels) {
    levels_ = std::move(levels);
    quantizer_.emplace(levels_, true, bucket_size_);
  }
  bool gathering() const { return gathering_; }
  void set_gathering(bool on) { gathering_ = on; }
  at::Generator& generator() { return generator_; }
  double multiplier() const { return multiplier_; }

 private:
  bool alq_, norm_based_;
  std::size_t count_;
  std::int64_t bucket_size_, statistics_buckets_;
  int sweeps_;
  ql::nuqsgd::AlqUpdate update_;
  at::Generator generator_;
  std::vector<double> levels_;
  std::optional<GradientQuantizer> quantizer_;
  ql::nuqsgd::BucketStatistics statistics_;
  bool gathering_ = false;
  double multiplier_ = 0.5;
  std::uint64_t worker_ = 0;
};

class Nuqsgd : public ql::Algorithm {
 public:
  explicit Nuqsgd(const ql::Config& options) {
    using ql::nuqsgd::Scheme;
    scheme_ = options.get_enum<Scheme>("scheme", {{"nuq", Scheme::nuq}, {"qsgd", Scheme::qsgd}, {"qsgdinf", Scheme::qsgdinf},
                                          {"trn", Scheme::trn}, {"alq", Scheme::alq}, {"alq_n", Scheme::alq_n},
                                          {"amq", Scheme::amq}, {"amq_n", Scheme::amq_n}, {"none", Scheme::none}});
    bits_ = static_cast<int>(options.get_int("bits", 1, 8));
    multiplier_ = options.get_double("multiplier", 1e-3, 0.999);
    bucket_size_ = options.get_int("bucket_size", 1, INT64_C(1) << 40);
    if ((scheme_ == Scheme::nuq || ql::nuqsgd::is_adaptive(scheme_)) && bits_ < 2) {
      throw ql::ConfigError(options.error_message("bits", "nuq, alq and amq need at least 2 bits"));
    }
    statistics_buckets_ = options.get_int("statistics_buckets", 1, INT64_C(1) << 40);
    sweeps_ = static_cast<int>(options.get_int("cd_sweeps", 1, 10000));
    alq_update_ = options.get_enum<ql::nuqsgd::AlqUpdate>("alq_update", {{"closed_form", ql::nuqsgd::AlqUpdate::closed_form},
                                                  {"gradient", ql::nuqsgd::AlqUpdate::gradient},
                                                  {"projected", ql::nuqsgd::AlqUpdate::projected}});
    const std::string steps = options.get_string("update_steps");
    std::vector<std::int64_t> parsed;
    std::stringstream stream(steps);
    for (std::string part; std::getline(stream, part, ',');) {
      try {
        parsed.push_back(std::stoll(part));
      } catch (const std::exception&) {
        parsed.clear();
        break;
      }
    }
    if (parsed.size() != 3 || parsed[0] < 1 || parsed[1] <= parsed[0] || parsed[2] < 1) {
      throw ql::ConfigError(options.error_message("update_steps", "expected \"i1,i2,every\" with 0 < i1 < i2, every > 0"));
    }
    update_steps_ = parsed;
  }

  bool update_due(std::int64_t step) const {
    return step == 0 || step == update_steps_[0] || step == update_steps_[1] || step % update_steps_[2] == 0;
  }

  void attach(ql::Network&, ql::Context& ctx) override {
    using ql::nuqsgd::Scheme;
    if (scheme_ == Scheme::none) {
      codec_ = std::make_shared<FullPrecisionCodec>();
      ctx.log(ql::LogLevel::info, "full-precision gradients (the SGD baseline)");
      return;
    }
    if (ql::nuqsgd::is_adaptive(scheme_)) {
      const bool alq = scheme_ == Scheme::alq || scheme_ == Scheme::alq_n;
      const bool norm_based = scheme_ == Scheme::alq || scheme_ == Scheme::amq;
      adaptive_ = std::make_shared<AdaptiveCodec>(alq, norm_based, bits_, bucket_size_,
                                                  statistics_buckets_, sweeps_, alq_update_, ctx.seed());
      adaptive_->start_gathering();
      codec_ = adaptive_;
      ctx.log(ql::LogLevel::info, fmt::format("{}: {} adapted levels, buckets of {}, updates after steps 0, {}, {} and every {}",
                                              ql::nuqsgd::to_string(scheme_), std::size_t{1} << bits_, bucket_size_, update_steps_[0],
                                              update_steps_[1], update_steps_[2]));
      return;
    }
    GradientQuantizer quantizer(ql::nuqsgd::level_set(scheme_, bits_, multiplier_), ql::nuqsgd::uses_l2_norm(scheme_),
                                bucket_size_);
    ctx.log(ql::LogLevel::info, fmt::format("{}: {} levels, {} bits a coordinate, buckets of {}", ql::nuqsgd::to_string(scheme_),
                                            quantizer.levels().size(), quantizer.bits(), bucket_size_));
    quantizing_ = std::make_shared<QuantizingCodec>(std::move(quantizer), ctx.seed());
    codec_ = quantizing_;
  }

  std::shared_ptr<ql::GradientCodec> gradient_codec() override { return codec_; }

  void on_step_end(std::int64_t step, ql::Context& ctx) override {
    if (!adaptive_) return;
    if (adaptive_->gathering()) {
      if (const auto v = adaptive_->adapt()) {
        ctx.scalar("variance_objective_before", v->first, step);
        ctx.scalar("variance_objective", v->second, step);
        const auto& levels = adaptive_->levels();
        for (std::size_t i = levels.size() / 2; i < levels.size(); ++i) {
          ctx.scalar(fmt::format("level/{}", i), levels[i], step);
        }
        if (scheme_ == ql::nuqsgd::Scheme::amq || scheme_ == ql::nuqsgd::Scheme::amq_n) ctx.scalar("multiplier", adaptive_->multiplier(), step);
        ctx.log(ql::LogLevel::debug, fmt::format("levels after step {}: {}", step, fmt::join(levels, ", ")));
      }
    }
    if (update_due(step)) adaptive_->start_gathering();
  }

  void save_state(torch::serialize::OutputArchive& archive) const override {
    if (quantizing_) archive.write("generator", quantizing_->generator().get_state());
    if (adaptive_) {
      archive.write("generator", adaptive_->generator().get_state());
      archive.write("levels", torch::tensor(adaptive_->levels(), torch::kFloat64));
      archive.write("gathering", torch::tensor(static_cast<std::int64_t>(adaptive_->gathering())));
    }
  }
  void load_state(torch::serialize::InputArchive& archive) override {
    at::Tensor state;
    if (quantizing_) {
      archive.read("generator", state);
      quantizing_->generator().set_state(state);
    }
    if (adaptive_) {
      archive.read("generator", state);
      adaptive_->generator().set_state(state);
      at::Tensor levels, gathering;
      archive.read("levels", levels);
      archive.read("gathering", gathering);
      adaptive_->set_levels(std::vector<double>(levels.data_ptr<double>(), levels.data_ptr<double>() + levels.numel()));
      // Statistics of a step interrupted half-way are not kept: gather again from the next one.
      adaptive_->set_gathering(gathering.item<std::int64_t>() != 0);
    }
  }

 private:
  ql::nuqsgd::Scheme scheme_ = ql::nuqsgd::Scheme::nuq;
  int bits_ = 3;
  double multiplier_ = 0.5;
  std::int64_t bucket_size_ = 8192;
  std::int64_t statistics_buckets_ = 50;
  int sweeps_ = 30;
  ql::nuqsgd::AlqUpdate alq_update_ = ql::nuqsgd::AlqUpdate::closed_form;
  std::vector<std::int64_t> update_steps_;
  std::shared_ptr<ql::GradientCodec> codec_;
  std::shared_ptr<QuantizingCodec> quantizing_;
  std::shared_ptr<AdaptiveCodec> adaptive_;
};

}  // namespace

QL_PLUGIN(algorithm, "nuqsgd", "0.1.0",
          "stochastic gradient quantisation for data-parallel SGD: NUQSGD, QSGD, QSGD-inf, ternary",
          kOptions, Nuqsgd)
