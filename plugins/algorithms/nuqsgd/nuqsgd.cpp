// The nuqsgd algorithm: stochastic gradient quantisation for data-parallel SGD (ALGORITHMS.md
// section 3): NUQSGD's exponential levels, QSGD (L2 or L-infinity norm), TernGrad-like ternary,
// or full precision. Its gradient codec turns each worker's gradient into the packed bit stream
// the workers would exchange; with [training] simulated_workers = M the host averages M such
// gradients per step, as the papers' single-machine runs do.
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

namespace {

using ql::nuqsgd::GradientQuantizer;

constexpr char kOptions[] = R"toml(
scheme = "nuq"          # nuq: levels ±multiplier^j (NUQSGD) | qsgd: 2^bits equispaced levels, L2 norm | qsgdinf: the same with the max-abs norm | trn: {-1, 0, 1}, max-abs norm | none: full precision (the SGD baseline)
bits = 3                # levels 2^bits (nuq, qsgd, qsgdinf); each coordinate takes ceil(log2 levels) bits on the wire
multiplier = 0.5        # nuq: the ratio p of neighbouring levels
bucket_size = 8192      # coordinates sharing one fp32 norm; the last, partial bucket is sent unquantised
)toml";

class QuantizingCodec : public ql::GradientCodec {
 public:
  QuantizingCodec(GradientQuantizer quantizer, std::uint64_t seed)
      : quantizer_(std::move(quantizer)), generator_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}
  std::vector<std::uint8_t> encode(const at::Tensor& bucket) override { return quantizer_.encode(bucket, generator_); }
  at::Tensor decode(const std::vector<std::uint8_t>& encoded, std::int64_t numel) override {
    return quantizer_.decode(encoded, numel);
  }
  at::Generator& generator() { return generator_; }

 private:
  GradientQuantizer quantizer_;
  at::Generator generator_;
};

// Full precision: the fp32 values themselves.
class FullPrecisionCodec : public ql::GradientCodec {
 public:
  std::vector<std::uint8_t> encode(const at::Tensor& bucket) override {
    const at::Tensor values = bucket.to(torch::kFloat32).contiguous();
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

class Nuqsgd : public ql::Algorithm {
 public:
  explicit Nuqsgd(const ql::Config& options) {
    scheme_ = options.get_choice("scheme", {"nuq", "qsgd", "qsgdinf", "trn", "none"});
    bits_ = static_cast<int>(options.get_int("bits", 1, 8));
    multiplier_ = options.get_double("multiplier", 1e-3, 0.999);
    bucket_size_ = options.get_int("bucket_size", 1, INT64_C(1) << 40);
    if (scheme_ == "nuq" && bits_ < 2) throw ql::ConfigError(options.error_message("bits", "nuq needs at least 2 bits"));
  }

  void attach(ql::Network&, ql::Context& ctx) override {
    if (scheme_ == "none") {
      codec_ = std::make_shared<FullPrecisionCodec>();
      ctx.log(ql::LogLevel::info, "full-precision gradients (the SGD baseline)");
      return;
    }
    GradientQuantizer quantizer(ql::nuqsgd::level_set(scheme_, bits_, multiplier_), scheme_ == "nuq" || scheme_ == "qsgd",
                                bucket_size_);
    ctx.log(ql::LogLevel::info, fmt::format("{}: {} levels, {} bits a coordinate, buckets of {}", scheme_,
                                            quantizer.levels().size(), quantizer.bits(), bucket_size_));
    quantizing_ = std::make_shared<QuantizingCodec>(std::move(quantizer), ctx.seed());
    codec_ = quantizing_;
  }

  std::shared_ptr<ql::GradientCodec> gradient_codec() override { return codec_; }

  void save_state(torch::serialize::OutputArchive& archive) const override {
    if (quantizing_) archive.write("generator", quantizing_->generator().get_state());
  }
  void load_state(torch::serialize::InputArchive& archive) override {
    if (!quantizing_) return;
    at::Tensor state;
    archive.read("generator", state);
    quantizing_->generator().set_state(state);
  }

 private:
  std::string scheme_;
  int bits_ = 3;
  double multiplier_ = 0.5;
  std::int64_t bucket_size_ = 8192;
  std::shared_ptr<ql::GradientCodec> codec_;
  std::shared_ptr<QuantizingCodec> quantizing_;
};

}  // namespace

QL_PLUGIN(algorithm, "nuqsgd", "0.1.0",
          "stochastic gradient quantisation for data-parallel SGD: NUQSGD, QSGD, QSGD-inf, ternary",
          kOptions, Nuqsgd)
