#include "gradient_quantizer.hpp"

#include "quantlab/sdk/error.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/types.h>

#include <algorithm>
#include <mutex>

#include <cmath>
#include <cstring>

namespace ql::nuqsgd {

std::vector<double> level_set(const std::string& scheme, int bits, double multiplier) {
  QL_CHECK(bits >= 1 && bits <= 8, "bits must be in [1, 8], got {}", bits);
  const std::int64_t count = std::int64_t{1} << bits;
  std::vector<double> levels;
  if (scheme == "trn") return {-1.0, 0.0, 1.0};
  if (scheme == "qsgd" || scheme == "qsgdinf") {
    QL_CHECK(count >= 2, "qsgd needs at least 2 levels");
    for (std::int64_t i = 0; i < count; ++i) levels.push_back(-1.0 + 2.0 * static_cast<double>(i) / static_cast<double>(count - 1));
    return levels;
  }
  if (scheme == "nuq") {
    QL_CHECK(bits >= 2, "nuq needs bits >= 2");
    QL_CHECK(multiplier > 0 && multiplier < 1, "multiplier must be in (0, 1), got {}", multiplier);
    for (std::int64_t j = 0; j < count / 2; ++j) levels.push_back(-std::pow(multiplier, static_cast<double>(j)));
    for (std::int64_t j = 0; j < count / 2; ++j) levels.push_back(std::pow(multiplier, static_cast<double>(count / 2 - 1 - j)));
    return levels;
  }
  throw Error(fmt::format("unknown scheme '{}' (nuq, qsgd, qsgdinf, trn)", scheme));
}

int code_bits(std::size_t levels) {
  int bits = 0;
  while ((std::size_t{1} << bits) < levels) ++bits;
  return std::max(bits, 1);
}

namespace {

// SplitMix64: a tiny, fast generator for the per-bucket random streams.
struct SplitMix {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
};

}  // namespace

GradientQuantizer::GradientQuantizer(std::vector<double> levels, bool l2_norm, std::int64_t bucket_size)
    : levels_(std::move(levels)), l2_norm_(l2_norm), bucket_size_(bucket_size), bits_(code_bits(levels_.size())) {
  QL_CHECK(levels_.size() >= 2 && levels_.size() <= 256 && levels_.front() == -1.0 && levels_.back() == 1.0,
           "levels must run from -1 to 1 (at most 256 of them)");
  for (std::size_t i = 1; i < levels_.size(); ++i) QL_CHECK(levels_[i] > levels_[i - 1], "levels must increase");
  QL_CHECK(bucket_size_ >= 1, "bucket size must be positive");
  for (double l : levels_) float_levels_.push_back(static_cast<float>(l));
}

std::int64_t GradientQuantizer::bucket_bytes() const { return (bucket_size_ + 7) / 8 * bits_; }

std::int64_t GradientQuantizer::encoded_size(std::int64_t numel) const {
  const std::int64_t buckets = numel / bucket_size_;
  return buckets * (4 + bucket_bytes()) + (numel - buckets * bucket_size_) * 4;
}

std::vector<std::uint8_t> GradientQuantizer::encode(const at::Tensor& gradient_in, at::Generator& generator,
                                                    std::uint64_t worker) const {
  const at::Tensor gradient = gradient_in.to(torch::kCPU, torch::kFloat32).contiguous().flatten();
  const std::int64_t numel = gradient.numel();
  const std::int64_t buckets = numel / bucket_size_;
  std::vector<std::uint8_t> out(static_cast<std::size_t>(encoded_size(numel)));
  std::uint64_t base = 0;
  {
    std::lock_guard<std::mutex> lock(generator.mutex());
    base = generator.get<at::CPUGeneratorImpl>()->random64();
  }
  if (worker != 0) base = SplitMix{base ^ (0x9E3779B97F4A7C15ULL * worker)}.next();
  const float* values = gradient.data_ptr<float>();
  const float* levels = float_levels_.data();
  const auto count = static_cast<int>(float_levels_.size());
  std::vector<float> inverse_widths;
  for (int j = 0; j + 1 < count; ++j) inverse_widths.push_back(1.0f / (levels[j + 1] - levels[j]));
  std::uint8_t* norms_at = out.data();
  std::uint8_t* codes_at = out.data() + buckets * 4;
  const std::int64_t stride = bucket_bytes();
  at::parallel_for(0, buckets, 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t b = begin; b < end; ++b) {
      const float* v = values + b * bucket_size_;
      double accumulated = 0.0;
      if (l2_norm_) {
        for (std::int64_t i = 0; i < bucket_size_; ++i) accumulated += static_cast<double>(v[i]) * v[i];
        accumulated = std::sqrt(accumulated);
      } else {
        for (std::int64_t i = 0; i < bucket_size_; ++i) accumulated = std::max(accumulated, static_cast<double>(std::fabs(v[i])));
      }
      const float norm = static_cast<float>(accumulated);
      std::memcpy(norms_at + b * 4, &norm, 4);
      const float scale = 1.0f / (norm + 1e-7f);
      SplitMix random{base ^ (0xD1B54A32D192ED03ULL * static_cast<std::uint64_t>(b + 1))};
      std::uint8_t* bytes = codes_at + b * stride;
      for (std::int64_t group = 0; group < bucket_size_; group += 8) {
        std::uint64_t word = 0;
        const std::int64_t n = std::min<std::int64_t>(8, bucket_size_ - group);
        std::uint64_t draws = 0;
        for (std::int64_t k = 0; k < n; ++k) {
          const float r = v[group + k] * scale;
          // j with l_j < r <= l_{j+1}, j = 0 when r <= l_1: the interior levels below r
          // (a branch-free count; at most 255 levels).
          int j = 0;
          for (int m = 1; m < count - 1; ++m) j += r > levels[m] ? 1 : 0;
          const float up = std::clamp((r - levels[j]) * inverse_widths[j], 0.0f, 1.0f);
          // Two 24-bit uniforms from each 64-bit draw.
          if ((k & 1) == 0) draws = random.next();
          const float u = static_cast<float>((draws >> ((k & 1) ? 40 : 8)) & 0xFFFFFF) * (1.0f / 16777216.0f);
          const std::uint64_t code = static_cast<std::uint64_t>(j) + (u < up ? 1 : 0);
          word |= code << (bits_ * k);
        }
        std::memcpy(bytes + group / 8 * bits_, &word, static_cast<std::size_t>(bits_));  // little-endian
      }
    }
  });
  const std::int64_t coded = buckets * bucket_size_;
  std::memcpy(out.data() + buckets * (4 + stride), values + coded, static_cast<std::size_t>((numel - coded) * 4));
  return out;
}

at::Tensor GradientQuantizer::decode(const std::vector<std::uint8_t>& encoded, std::int64_t numel) const {
  QL_CHECK(static_cast<std::int64_t>(encoded.size()) == encoded_size(numel),
           "encoded gradient of {} bytes, expected {} for {} values", encoded.size(), encoded_size(numel), numel);
  const std::int64_t buckets = numel / bucket_size_;
  const std::int64_t stride = bucket_bytes();
  at::Tensor out = torch::empty({numel}, torch::kFloat32);
  float* values = out.data_ptr<float>();
  const float* levels = float_levels_.data();
  const std::uint8_t* norms_at = encoded.data();
  const std::uint8_t* codes_at = encoded.data() + buckets * 4;
  const std::uint64_t mask = (std::uint64_t{1} << bits_) - 1;
  const auto count = static_cast<std::uint64_t>(float_levels_.size());
  at::parallel_for(0, buckets, 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t b = begin; b < end; ++b) {
      float norm = 0;
      std::memcpy(&norm, norms_at + b * 4, 4);
      float* v = values + b * bucket_size_;
      const std::uint8_t* bytes = codes_at + b * stride;
      for (std::int64_t group = 0; group < bucket_size_; group += 8) {
        std::uint64_t word = 0;
        std::memcpy(&word, bytes + group / 8 * bits_, static_cast<std::size_t>(bits_));
        const std::int64_t n = std::min<std::int64_t>(8, bucket_size_ - group);
        for (std::int64_t k = 0; k < n; ++k) {
          const std::uint64_t code = (word >> (bits_ * k)) & mask;
          v[group + k] = norm * levels[std::min(code, count - 1)];
        }
      }
    }
  });
  const std::int64_t coded = buckets * bucket_size_;
  std::memcpy(values + coded, encoded.data() + buckets * (4 + stride), static_cast<std::size_t>((numel - coded) * 4));
  return out;
}

at::Tensor GradientQuantizer::quantize(const at::Tensor& gradient, at::Generator& generator) const {
  return decode(encode(gradient, generator), gradient.numel());
}

}  // namespace ql::nuqsgd
