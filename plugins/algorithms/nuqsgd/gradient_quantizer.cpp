#include "gradient_quantizer.hpp"

#include "bucket_coding.hpp"
#ifdef QL_NUQSGD_CUDA_KERNELS
#include "cuda_codec.hpp"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "quantlab/sdk/error.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/types.h>

#include <algorithm>
#include <mutex>

#include <cmath>
#include <cstring>
#include <immintrin.h>
#include <limits>

namespace ql::nuqsgd {

std::string_view to_string(Scheme scheme) {
  switch (scheme) {
    case Scheme::nuq: return "nuq";
    case Scheme::qsgd: return "qsgd";
    case Scheme::qsgdinf: return "qsgdinf";
    case Scheme::trn: return "trn";
    case Scheme::alq: return "alq";
    case Scheme::alq_n: return "alq_n";
    case Scheme::amq: return "amq";
    case Scheme::amq_n: return "amq_n";
    case Scheme::none: return "none";
  }
  return "unknown";
}

bool is_adaptive(Scheme scheme) {
  return scheme == Scheme::alq || scheme == Scheme::alq_n || scheme == Scheme::amq || scheme == Scheme::amq_n;
}

bool uses_l2_norm(Scheme scheme) { return scheme != Scheme::qsgdinf && scheme != Scheme::trn; }

std::vector<double> level_set(Scheme scheme, int bits, double multiplier) {
  QL_CHECK(bits >= 1 && bits <= 8, "bits must be in [1, 8], got {}", bits);
  const std::int64_t count = std::int64_t{1} << bits;
  std::vector<double> levels;
  if (scheme == Scheme::trn) return {-1.0, 0.0, 1.0};
  if (scheme == Scheme::qsgd || scheme == Scheme::qsgdinf) {
    QL_CHECK(count >= 2, "qsgd needs at least 2 levels");
    for (std::int64_t i = 0; i < count; ++i) levels.push_back(-1.0 + 2.0 * static_cast<double>(i) / static_cast<double>(count - 1));
    return levels;
  }
  if (scheme == Scheme::nuq) {
    QL_CHECK(bits >= 2, "nuq needs bits >= 2");
    QL_CHECK(multiplier > 0 && multiplier < 1, "multiplier must be in (0, 1), got {}", multiplier);
    for (std::int64_t j = 0; j < count / 2; ++j) levels.push_back(-std::pow(multiplier, static_cast<double>(j)));
    for (std::int64_t j = 0; j < count / 2; ++j) levels.push_back(std::pow(multiplier, static_cast<double>(count / 2 - 1 - j)));
    return levels;
  }
  throw Error(fmt::format("scheme '{}' has no fixed level set (nuq, qsgd, qsgdinf, trn have)", to_string(scheme)));
}

int code_bits(std::size_t levels) {
  int bits = 0;
  while ((std::size_t{1} << bits) < levels) ++bits;
  return std::max(bits, 1);
}

namespace {

// Cells of the level-search table over [-1, 1]: enough for every cell to hold at most one
// level, up to this many.
constexpr int kMaxSearchCells = 1 << 16;
// Values coded per pass over a block (the scratch arrays live on the stack).
constexpr std::int64_t kBlock = 512;

// The level tables, and whether the CPU has AVX2 (halving levels: the intrinsics version).
struct EncodeTables : coding::LevelTables {
  bool avx2;
};

// Eight codes to a group of Bits bytes, little-endian (the width a constant, so the shifts are).
template <int Bits>
inline __attribute__((always_inline)) void pack_codes(const std::int32_t* code, std::int64_t n, std::uint8_t* out) {
  for (std::int64_t group = 0; group < n; group += 8) {
    std::uint64_t word = 0;
    if (group + 8 <= n) {
      for (int k = 0; k < 8; ++k) word |= static_cast<std::uint64_t>(code[group + k]) << (Bits * k);
    } else {
      for (std::int64_t k = 0; k < n - group; ++k) word |= static_cast<std::uint64_t>(code[group + k]) << (Bits * k);
    }
    std::memcpy(out + group / 8 * Bits, &word, Bits);
  }
}

// NUQSGD's levels with p = 1/2, ±2^-j for j < h = count / 2: the exponent of |r| names the two
// levels around it and the mantissa gives the fraction, no search. Indices ascend: -1 is 0,
// -2^-(h-1) is h-1, 2^-(h-1) is h, 1 is 2h-1. Values i in [begin, end); one at a time, as the
// CUDA kernel does (coding::round_halving).
inline void halving_levels(const float* v, std::int64_t begin, std::int64_t end, float scale, const EncodeTables& t,
                           std::int32_t* code, float* up) {
  for (std::int64_t i = begin; i < end; ++i) {
    const coding::Rounding rounding = coding::round_halving(v[i] * scale, t);
    code[i] = rounding.lower;
    up[i] = rounding.up;
  }
}

// The same, eight values at a time with AVX2 (GCC keeps the scalar version's branches, which
// mispredict on gradients: half of the values fall in the centre interval).
__attribute__((target("avx2"))) void halving_levels_avx2(const float* v, std::int64_t n, float scale,
                                                         const EncodeTables& t, std::int32_t* code, float* up) {
  const std::int32_t h = t.count / 2, top = t.count - 2;
  const float smallest = t.levels[h];
  const __m256 scales = _mm256_set1_ps(scale), smallests = _mm256_set1_ps(smallest);
  const __m256 inverse_center = _mm256_set1_ps(0.5f / smallest);
  const __m256 zeros = _mm256_setzero_ps(), ones = _mm256_set1_ps(1.0f), twos = _mm256_set1_ps(2.0f);
  const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256i mantissa_mask = _mm256_set1_epi32(0x007FFFFF), one_bits = _mm256_set1_epi32(0x3F800000);
  const __m256i bias = _mm256_set1_epi32(127), tops = _mm256_set1_epi32(top), zero_ints = _mm256_setzero_si256();
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_mul_ps(_mm256_loadu_ps(v + i), scales);
    const __m256 a = _mm256_and_ps(x, magnitude);
    const __m256i bits = _mm256_castps_si256(a);
    const __m256i e = _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), bias);
    const __m256 mantissa = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(bits, mantissa_mask), one_bits));
    const __m256 positive = _mm256_cmp_ps(x, zeros, _CMP_GE_OQ);
    const __m256 center = _mm256_cmp_ps(a, smallests, _CMP_LT_OQ);
    __m256i j = _mm256_blendv_epi8(_mm256_sub_epi32(_mm256_set1_epi32(-1), e),
                                   _mm256_add_epi32(_mm256_set1_epi32(2 * h - 1), e), _mm256_castps_si256(positive));
    __m256 fraction = _mm256_blendv_ps(_mm256_sub_ps(twos, mantissa), _mm256_sub_ps(mantissa, ones), positive);
    j = _mm256_blendv_epi8(j, _mm256_set1_epi32(h - 1), _mm256_castps_si256(center));
    fraction = _mm256_blendv_ps(fraction, _mm256_mul_ps(_mm256_add_ps(x, smallests), inverse_center), center);
    fraction = _mm256_blendv_ps(fraction, zeros, _mm256_castsi256_ps(_mm256_cmpgt_epi32(zero_ints, j)));
    fraction = _mm256_blendv_ps(fraction, ones, _mm256_castsi256_ps(_mm256_cmpgt_epi32(j, tops)));
    j = _mm256_min_epi32(_mm256_max_epi32(j, zero_ints), tops);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(code + i), j);
    _mm256_storeu_ps(up + i, fraction);
  }
  halving_levels(v, i, n, scale, t, code, up);
}

// Codes of one bucket: j with l_j < r <= l_{j+1} (0 when r <= l_1), plus one with probability
// (r - l_j) / (l_{j+1} - l_j). Written as separate passes so that the arithmetic passes
// vectorise; built for AVX2 as well as the baseline, picked at load time.
__attribute__((target_clones("avx2", "default")))
void encode_bucket(const float* v, std::int64_t size, float scale, std::uint32_t seed, const EncodeTables& t,
                   std::uint8_t* out) {
  alignas(32) float r[kBlock];
  alignas(32) float up[kBlock];
  alignas(32) std::int32_t cell[kBlock];
  alignas(32) std::int32_t code[kBlock];
  const float half_cells = 0.5f * static_cast<float>(t.cells);
  const int interior_top = t.count - 2;
  const std::int64_t group_bytes = t.bits;
  for (std::int64_t start = 0; start < size; start += kBlock) {
    const std::int64_t n = std::min(kBlock, size - start);
    if (t.halving && t.avx2) {
      halving_levels_avx2(v + start, n, scale, t, code, up);
    } else if (t.halving) {
      halving_levels(v + start, 0, n, scale, t, code, up);
    } else if (t.uniform_inverse_width > 0) {
      // l_j = -1 + j w: j and the fraction straight from (r + 1) / w.
      for (std::int64_t i = 0; i < n; ++i) {
        const float position = std::clamp((v[start + i] * scale + 1.0f) * t.uniform_inverse_width, 0.0f,
                                          static_cast<float>(interior_top + 1));
        const std::int32_t j = std::min(static_cast<std::int32_t>(position), interior_top);
        code[i] = j;
        up[i] = position - static_cast<float>(j);
      }
    } else {
    for (std::int64_t i = 0; i < n; ++i) {
      r[i] = v[start + i] * scale;
      const float position = (r[i] + 1.0f) * half_cells;
      cell[i] = static_cast<std::int32_t>(std::clamp(position, 0.0f, static_cast<float>(t.cells - 1)));
    }
    if (t.cells > 0) {
      // At most one level between the table's index and r: one branch-free step.
      for (std::int64_t i = 0; i < n; ++i) {
        std::int32_t j = t.search[cell[i]];
        j += r[i] > t.levels[j + 1] ? 1 : 0;
        j = std::min(j, interior_top);
        code[i] = j;
        up[i] = (r[i] - t.levels[j]) * t.inverse_widths[j];
      }
    } else {
      for (std::int64_t i = 0; i < n; ++i) {
        int j = 0;
        while (j < interior_top && r[i] > t.levels[j + 1]) ++j;
        code[i] = j;
        up[i] = (r[i] - t.levels[j]) * t.inverse_widths[j];
      }
    }
    }
    const auto offset = static_cast<std::uint32_t>(start);
    for (std::int64_t i = 0; i < n; ++i) {
      code[i] += coding::rounding_draw(seed, offset + static_cast<std::uint32_t>(i)) < up[i] ? 1 : 0;
    }
    std::uint8_t* at = out + start / 8 * group_bytes;
    switch (t.bits) {
      case 1: pack_codes<1>(code, n, at); break;
      case 2: pack_codes<2>(code, n, at); break;
      case 3: pack_codes<3>(code, n, at); break;
      case 4: pack_codes<4>(code, n, at); break;
      case 5: pack_codes<5>(code, n, at); break;
      case 6: pack_codes<6>(code, n, at); break;
      case 7: pack_codes<7>(code, n, at); break;
      default: pack_codes<8>(code, n, at); break;
    }
  }
}

// out = (or +=) the bucket the codes stand for; the code width is a constant so that the
// unpacking unrolls.
template <int Bits>
inline __attribute__((always_inline)) void decode_bucket_of(const std::uint8_t* bytes, std::int64_t size,
                                                            const float* scaled_levels, float* out, bool assign) {
  constexpr std::uint64_t kMask = (std::uint64_t{1} << Bits) - 1;
  alignas(32) float values[8];
  for (std::int64_t group = 0; group < size; group += 8) {
    std::uint64_t word = 0;
    // A whole 8-byte load (masked below) except where it would pass the bucket's codes.
    if (group + 64 / Bits < size) std::memcpy(&word, bytes + group / 8 * Bits, 8);
    else std::memcpy(&word, bytes + group / 8 * Bits, Bits);
    for (int k = 0; k < 8; ++k) values[k] = scaled_levels[(word >> (Bits * k)) & kMask];
    const std::int64_t m = std::min<std::int64_t>(8, size - group);
    if (m == 8 && assign) {
      for (int k = 0; k < 8; ++k) out[group + k] = values[k];
    } else if (m == 8) {
      for (int k = 0; k < 8; ++k) out[group + k] += values[k];
    } else {
      for (std::int64_t k = 0; k < m; ++k) out[group + k] = assign ? values[k] : out[group + k] + values[k];
    }
  }
}

// One function per instruction set (target_clones takes no templates in clang), each with the
// eight unrolled widths inlined.
__attribute__((target_clones("avx2", "default")))
void decode_bucket(int bits, const std::uint8_t* bytes, std::int64_t size, const float* scaled_levels, float* out,
                   bool assign) {
  switch (bits) {
    case 1: return decode_bucket_of<1>(bytes, size, scaled_levels, out, assign);
    case 2: return decode_bucket_of<2>(bytes, size, scaled_levels, out, assign);
    case 3: return decode_bucket_of<3>(bytes, size, scaled_levels, out, assign);
    case 4: return decode_bucket_of<4>(bytes, size, scaled_levels, out, assign);
    case 5: return decode_bucket_of<5>(bytes, size, scaled_levels, out, assign);
    case 6: return decode_bucket_of<6>(bytes, size, scaled_levels, out, assign);
    case 7: return decode_bucket_of<7>(bytes, size, scaled_levels, out, assign);
    default: return decode_bucket_of<8>(bytes, size, scaled_levels, out, assign);
  }
}

// The L2 norm or the largest magnitude of a bucket, in eight float lanes (vectorisable).
__attribute__((target_clones("avx2", "default")))
float bucket_norm(const float* v, std::int64_t size, bool l2) {
  alignas(32) float lanes[8] = {};
  std::int64_t i = 0;
  for (; i + 8 <= size; i += 8) {
    for (int k = 0; k < 8; ++k) {
      const float x = v[i + k];
      lanes[k] = l2 ? lanes[k] + x * x : std::max(lanes[k], std::fabs(x));
    }
  }
  for (; i < size; ++i) lanes[0] = l2 ? lanes[0] + v[i] * v[i] : std::max(lanes[0], std::fabs(v[i]));
  double total = 0.0;
  for (float lane : lanes) total = l2 ? total + lane : std::max<double>(total, lane);
  return static_cast<float>(l2 ? std::sqrt(total) : total);
}

}  // namespace

GradientQuantizer::GradientQuantizer(std::vector<double> levels, bool l2_norm, std::int64_t bucket_size)
    : levels_(std::move(levels)), l2_norm_(l2_norm), bucket_size_(bucket_size), bits_(code_bits(levels_.size())) {
  QL_CHECK(levels_.size() >= 2 && levels_.size() <= 256 && levels_.front() == -1.0 && levels_.back() == 1.0,
           "levels must run from -1 to 1 (at most 256 of them)");
  for (std::size_t i = 1; i < levels_.size(); ++i) QL_CHECK(levels_[i] > levels_[i - 1], "levels must increase");
  QL_CHECK(bucket_size_ >= 1, "bucket size must be positive");
  for (double l : levels_) float_levels_.push_back(static_cast<float>(l));
  double smallest_gap = 2.0;
  for (std::size_t j = 0; j + 1 < float_levels_.size(); ++j) {
    inverse_widths_.push_back(1.0f / (float_levels_[j + 1] - float_levels_[j]));
    smallest_gap = std::min(smallest_gap, levels_[j + 1] - levels_[j]);
  }
  const double spacing = 2.0 / static_cast<double>(levels_.size() - 1);
  bool equispaced = true;
  for (std::size_t j = 0; j < levels_.size(); ++j) {
    equispaced = equispaced && std::fabs(levels_[j] - (-1.0 + spacing * static_cast<double>(j))) < 1e-12;
  }
  uniform_inverse_width_ = equispaced ? static_cast<float>(1.0 / spacing) : 0.0f;
  const std::size_t half = levels_.size() / 2;
  halving_ = levels_.size() % 2 == 0 && levels_.size() >= 4;
  for (std::size_t j = 0; j < half && halving_; ++j) {
    const double level = std::ldexp(1.0, -static_cast<int>(j));
    halving_ = levels_[j] == -level && levels_[levels_.size() - 1 - j] == level;
  }
  padded_levels_ = float_levels_;
  padded_levels_.push_back(std::numeric_limits<float>::infinity());
  // Cells at most half the smallest gap wide; a cell's entry counts the interior levels below
  // its lower edge less 1 % of a cell (the slack covers rounding in r -> cell), so it is j or
  // j - 1 for every value in the cell.
  search_cells_ = 256;
  while (search_cells_ < kMaxSearchCells && 2.0 / search_cells_ > smallest_gap / 2) search_cells_ *= 2;
  if (2.0 / search_cells_ > smallest_gap / 2) search_cells_ = 0;
  search_.resize(static_cast<std::size_t>(search_cells_));
  for (int c = 0; c < search_cells_; ++c) {
    const double edge = -1.0 + 2.0 * (c - 0.01) / search_cells_;
    int below = 0;
    for (std::size_t m = 1; m + 1 < levels_.size(); ++m) below += levels_[m] < edge ? 1 : 0;
    search_[static_cast<std::size_t>(c)] = below;
  }
}

coding::LevelTables GradientQuantizer::host_tables() const {
  return {padded_levels_.data(), inverse_widths_.data(), search_.data(), search_cells_, uniform_inverse_width_,
          halving_, static_cast<int>(float_levels_.size()), bits_};
}

std::int64_t GradientQuantizer::bucket_bytes() const { return (bucket_size_ + 7) / 8 * bits_; }

std::int64_t GradientQuantizer::encoded_size(std::int64_t numel) const {
  const std::int64_t buckets = numel / bucket_size_;
  return buckets * (4 + bucket_bytes()) + (numel - buckets * bucket_size_) * 4;
}

std::vector<std::uint8_t> GradientQuantizer::encode(const at::Tensor& gradient_in, at::Generator& generator,
                                                    std::uint64_t worker) const {
  std::uint64_t base = 0;
  {
    std::lock_guard<std::mutex> lock(generator.mutex());
    base = generator.get<at::CPUGeneratorImpl>()->random64();
  }
  if (worker != 0) base = coding::splitmix(base ^ (0x9E3779B97F4A7C15ULL * worker));
#ifdef QL_NUQSGD_CUDA_KERNELS
  if (gradient_in.is_cuda()) return encode_on_device(gradient_in, base);
#endif
  const at::Tensor gradient = gradient_in.to(torch::kCPU, torch::kFloat32).contiguous().flatten();
  const std::int64_t numel = gradient.numel();
  const std::int64_t buckets = numel / bucket_size_;
  std::vector<std::uint8_t> out(static_cast<std::size_t>(encoded_size(numel)));
  const float* values = gradient.data_ptr<float>();
  const EncodeTables tables{host_tables(), __builtin_cpu_supports("avx2") != 0};
  std::uint8_t* norms_at = out.data();
  std::uint8_t* codes_at = out.data() + buckets * 4;
  const std::int64_t stride = bucket_bytes();
  at::parallel_for(0, buckets, 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t b = begin; b < end; ++b) {
      const float* v = values + b * bucket_size_;
      const float norm = bucket_norm(v, bucket_size_, l2_norm_);
      std::memcpy(norms_at + b * 4, &norm, 4);
      encode_bucket(v, bucket_size_, 1.0f / (norm + 1e-7f), coding::bucket_seed(base, b), tables,
                    codes_at + b * stride);
    }
  });
  // A norm that overflowed float32 (or a gradient with NaN/inf) would decode to NaN: say so here,
  // where the cause is known, not at the receiver as a corrupt stream.
  for (std::int64_t b = 0; b < buckets; ++b) {
    float norm = 0;
    std::memcpy(&norm, norms_at + b * 4, 4);
    QL_CHECK(std::isfinite(norm), "gradient codec: bucket {} of {} has norm {}: the gradient is not finite or too "
             "large for float32, i.e. training diverged (lower the learning rate, or use smaller buckets)", b, buckets, norm);
  }
  const std::int64_t coded = buckets * bucket_size_;
  std::memcpy(out.data() + buckets * (4 + stride), values + coded, static_cast<std::size_t>((numel - coded) * 4));
  return out;
}

void GradientQuantizer::decode_into(const std::vector<std::uint8_t>& encoded, std::int64_t numel, float* out,
                                    bool accumulate, float weight) const {
  const std::int64_t buckets = numel / bucket_size_;
  const std::int64_t stride = bucket_bytes();
  const std::uint8_t* norms_at = encoded.data();
  const std::uint8_t* codes_at = encoded.data() + buckets * 4;
  at::parallel_for(0, buckets, 1, [&](std::int64_t begin, std::int64_t end) {
    float scaled[256] = {};
    for (std::int64_t b = begin; b < end; ++b) {
      float norm = 0;
      std::memcpy(&norm, norms_at + b * 4, 4);
      norm *= weight;
      for (std::size_t j = 0; j < float_levels_.size(); ++j) scaled[j] = norm * float_levels_[j];
      // Codes past the last level (only in a corrupt stream) read as the top level.
      for (std::size_t j = float_levels_.size(); j < (std::size_t{1} << bits_); ++j) scaled[j] = norm;
      decode_bucket(bits_, codes_at + b * stride, bucket_size_, scaled, out + b * bucket_size_, !accumulate);
    }
  });
}

void GradientQuantizer::check_encoding(const std::vector<std::uint8_t>& encoded, std::int64_t numel) const {
  QL_CHECK(numel >= 0, "encoded gradient of {} values", numel);
  QL_CHECK(static_cast<std::int64_t>(encoded.size()) == encoded_size(numel),
           "encoded gradient of {} bytes, expected {} for {} values", encoded.size(), encoded_size(numel), numel);
  const std::int64_t buckets = numel / bucket_size_;
  for (std::int64_t b = 0; b < buckets; ++b) {
    float norm = 0;
    std::memcpy(&norm, encoded.data() + b * 4, 4);
    QL_CHECK(std::isfinite(norm) && norm >= 0, "encoded gradient: bucket {} of {} has norm {} (a corrupt stream, or a gradient that was not finite)",
             b, buckets, norm);
  }
  const auto* tail = encoded.data() + buckets * (4 + bucket_bytes());
  for (std::int64_t i = 0; i < numel - buckets * bucket_size_; ++i) {
    float x = 0;
    std::memcpy(&x, tail + i * 4, 4);
    QL_CHECK(std::isfinite(x), "encoded gradient: unquantised value {} is {} (a corrupt stream, or a gradient that was not finite)",
             buckets * bucket_size_ + i, x);
  }
}

at::Tensor GradientQuantizer::decode(const std::vector<std::uint8_t>& encoded, std::int64_t numel) const {
  check_encoding(encoded, numel);
  at::Tensor out = torch::empty({numel}, torch::kFloat32);
  decode_into(encoded, numel, out.data_ptr<float>(), /*accumulate=*/false, 1.0f);
  const std::int64_t buckets = numel / bucket_size_;
  const std::int64_t coded = buckets * bucket_size_;
  std::memcpy(out.data_ptr<float>() + coded, encoded.data() + buckets * (4 + bucket_bytes()),
              static_cast<std::size_t>((numel - coded) * 4));
  return out;
}

void GradientQuantizer::decode_add(const std::vector<std::uint8_t>& encoded, at::Tensor& sum, float weight) const {
  const std::int64_t numel = sum.numel();
  QL_CHECK(sum.is_contiguous() && sum.scalar_type() == torch::kFloat32, "decode_add needs a contiguous fp32 sum");
  check_encoding(encoded, numel);
  if (!sum.device().is_cpu()) {
#ifdef QL_NUQSGD_CUDA_KERNELS
    if (sum.is_cuda()) return decode_add_on_device(encoded, sum, weight);
#endif
    at::Tensor on_cpu = sum.cpu();
    decode_add(encoded, on_cpu, weight);
    sum.copy_(on_cpu);
    return;
  }
  float* values = sum.data_ptr<float>();
  decode_into(encoded, numel, values, /*accumulate=*/true, weight);
  const std::int64_t buckets = numel / bucket_size_;
  const std::int64_t coded = buckets * bucket_size_;
  const auto* tail = encoded.data() + buckets * (4 + bucket_bytes());
  for (std::int64_t i = 0; i < numel - coded; ++i) {
    float x = 0;
    std::memcpy(&x, tail + i * 4, 4);
    values[coded + i] += weight * x;
  }
}

#ifdef QL_NUQSGD_CUDA_KERNELS
namespace {

void check_launch(const char* error, std::string_view what) {
  if (error != nullptr) throw Error(fmt::format("nuqsgd: CUDA {} failed: {}", what, error));
}

}  // namespace

void GradientQuantizer::upload_tables(const at::Tensor& like) const {
  if (device_levels_.defined() && device_levels_.device() == like.device()) return;
  const auto on_device = [&](auto& values, at::ScalarType type) {
    return torch::tensor(values, torch::TensorOptions(type)).to(like.device());
  };
  device_levels_ = on_device(padded_levels_, torch::kFloat32);
  device_inverse_widths_ = on_device(inverse_widths_, torch::kFloat32);
  device_search_ = search_.empty() ? torch::zeros({1}, like.options().dtype(torch::kInt32))
                                   : on_device(search_, torch::kInt32);
}

std::vector<std::uint8_t> GradientQuantizer::encode_on_device(const at::Tensor& gradient_in, std::uint64_t base) const {
  const c10::cuda::CUDAGuard on_its_device(gradient_in.device());
  const at::Tensor gradient = gradient_in.to(torch::kFloat32).contiguous().flatten();
  const std::int64_t numel = gradient.numel();
  upload_tables(gradient);
  coding::LevelTables tables = host_tables();
  tables.levels = device_levels_.data_ptr<float>();
  tables.inverse_widths = device_inverse_widths_.data_ptr<float>();
  tables.search = device_search_.data_ptr<std::int32_t>();
  const cuda::StreamLayout layout{numel, bucket_size_, numel / bucket_size_, bucket_bytes()};
  at::Tensor wire = torch::empty({encoded_size(numel)}, gradient.options().dtype(torch::kUInt8));
  if (numel > 0) {
    check_launch(cuda::encode(gradient.data_ptr<float>(), layout, l2_norm_, base, tables, wire.data_ptr<std::uint8_t>(),
                              c10::cuda::getCurrentCUDAStream().stream()),
                 "encode");
  }
  std::vector<std::uint8_t> out(static_cast<std::size_t>(wire.numel()));
  torch::from_blob(out.data(), {wire.numel()}, torch::kUInt8).copy_(wire);
  return out;
}

void GradientQuantizer::decode_add_on_device(const std::vector<std::uint8_t>& encoded, at::Tensor& sum,
                                             float weight) const {
  const c10::cuda::CUDAGuard on_its_device(sum.device());
  const std::int64_t numel = sum.numel();
  if (numel == 0) return;
  upload_tables(sum);
  const at::Tensor wire =
      torch::from_blob(const_cast<std::uint8_t*>(encoded.data()), {static_cast<std::int64_t>(encoded.size())},
                       torch::kUInt8)
          .to(sum.device());
  const cuda::StreamLayout layout{numel, bucket_size_, numel / bucket_size_, bucket_bytes()};
  check_launch(cuda::decode_add(wire.data_ptr<std::uint8_t>(), layout, device_levels_.data_ptr<float>(),
                                static_cast<int>(float_levels_.size()), bits_, weight, sum.data_ptr<float>(),
                                c10::cuda::getCurrentCUDAStream().stream()),
               "decode");
}
#endif

at::Tensor GradientQuantizer::quantize(const at::Tensor& gradient, at::Generator& generator) const {
  return decode(encode(gradient, generator), gradient.numel());
}

}  // namespace ql::nuqsgd
