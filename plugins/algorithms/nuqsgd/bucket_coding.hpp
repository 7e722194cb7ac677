// The gradient codec's arithmetic for one bucket, written once for the CUDA kernels
// (cuda_codec.cu) and for the host, where a test runs it against GradientQuantizer's
// vectorised CPU encoder and checks the two write the same bytes. Every float operation here
// is the CPU encoder's, in its order: the kernels are built with -fmad=false so that nvcc does
// not fuse a multiply and an add that the CPU rounds separately.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define QL_CODING_FUNCTION __host__ __device__ inline
#else
#define QL_CODING_FUNCTION inline
#endif

namespace ql::nuqsgd::coding {

/// The level tables an encoder searches (GradientQuantizer builds them; on a GPU they live in
/// device memory).
struct LevelTables {
  const float* levels;          // count levels, then +inf
  const float* inverse_widths;  // count - 1 of them: 1 / (l_{j+1} - l_j)
  const std::int32_t* search;   // cells entries: a cell's level index, or one less
  int cells;                    // 0: no table, search level by level
  float uniform_inverse_width;  // equispaced levels: 1 / their spacing; else 0
  bool halving;                 // levels ±2^-j, j < count / 2
  int count;
  int bits;                     // per code on the wire
};

/// Murmur3's 32-bit finaliser: the counter-based stream of a bucket's rounding draws.
QL_CODING_FUNCTION std::uint32_t mix32(std::uint32_t h) {
  h ^= h >> 16;
  h *= 0x85EBCA6BU;
  h ^= h >> 13;
  h *= 0xC2B2AE35U;
  h ^= h >> 16;
  return h;
}

/// SplitMix64's output for a state: seeds a bucket's stream from the step's draw.
QL_CODING_FUNCTION std::uint64_t splitmix(std::uint64_t state) {
  std::uint64_t z = state + 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/// The seed of bucket `bucket`'s stream for the step's draw `base`.
QL_CODING_FUNCTION std::uint32_t bucket_seed(std::uint64_t base, std::int64_t bucket) {
  return static_cast<std::uint32_t>(splitmix(base ^ (0xD1B54A32D192ED03ULL * static_cast<std::uint64_t>(bucket + 1))));
}

/// The draw in [0, 1) that rounds coordinate `index` of a bucket up or down.
QL_CODING_FUNCTION float rounding_draw(std::uint32_t seed, std::uint32_t index) {
  const std::uint32_t h = mix32(seed + index * 0x9E3779B9U);
  return static_cast<float>(h >> 8) * (1.0f / 16777216.0f);
}

QL_CODING_FUNCTION std::uint32_t bits_of(float x) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(x);
#else
  std::uint32_t bits;
  std::memcpy(&bits, &x, 4);
  return bits;
#endif
}

QL_CODING_FUNCTION float float_of(std::uint32_t bits) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(bits);
#else
  float x;
  std::memcpy(&x, &bits, 4);
  return x;
#endif
}

// std::clamp, std::min and std::fabs as the CPU encoder evaluates them (also in device code).
QL_CODING_FUNCTION float clamp_float(float x, float low, float high) { return x < low ? low : (high < x ? high : x); }
QL_CODING_FUNCTION std::int32_t min_int(std::int32_t a, std::int32_t b) { return b < a ? b : a; }
QL_CODING_FUNCTION float magnitude(float x) { return float_of(bits_of(x) & 0x7FFFFFFFU); }
QL_CODING_FUNCTION float max_float(float a, float b) { return a < b ? b : a; }

/// The lower of the two levels around v·scale and the probability of rounding up to the next.
struct Rounding {
  std::int32_t lower;
  float up;
};

/// NUQSGD's levels with p = 1/2: the exponent of |r| names the two levels around it, the
/// mantissa gives the fraction (GradientQuantizer's halving_levels_avx2, lane by lane).
QL_CODING_FUNCTION Rounding round_halving(float x, const LevelTables& t) {
  const std::int32_t h = t.count / 2, top = t.count - 2;
  const float smallest = t.levels[h];
  const float a = magnitude(x);
  const std::uint32_t bits = bits_of(a);
  const std::int32_t e = static_cast<std::int32_t>(bits >> 23) - 127;
  const float mantissa = float_of((bits & 0x007FFFFFU) | 0x3F800000U);
  std::int32_t j = x >= 0.0f ? 2 * h - 1 + e : -e - 1;
  float fraction = x >= 0.0f ? mantissa - 1.0f : 2.0f - mantissa;
  if (a < smallest) {
    j = h - 1;
    fraction = (x + smallest) * (0.5f / smallest);
  }
  if (j < 0) fraction = 0.0f;
  if (j > top) fraction = 1.0f;
  return {j < 0 ? 0 : (j > top ? top : j), fraction};
}

/// Coordinate v of a bucket whose scale is `scale` (1 / (norm + 1e-7)).
QL_CODING_FUNCTION Rounding round_coordinate(float v, float scale, const LevelTables& t) {
  const std::int32_t interior_top = t.count - 2;
  if (t.halving) return round_halving(v * scale, t);
  if (t.uniform_inverse_width > 0) {
    const float position = clamp_float((v * scale + 1.0f) * t.uniform_inverse_width, 0.0f,
                                       static_cast<float>(interior_top + 1));
    const std::int32_t j = min_int(static_cast<std::int32_t>(position), interior_top);
    return {j, position - static_cast<float>(j)};
  }
  const float r = v * scale;
  std::int32_t j = 0;
  if (t.cells > 0) {
    const float position = (r + 1.0f) * (0.5f * static_cast<float>(t.cells));
    const auto cell = static_cast<std::int32_t>(clamp_float(position, 0.0f, static_cast<float>(t.cells - 1)));
    j = t.search[cell];
    j += r > t.levels[j + 1] ? 1 : 0;
    j = min_int(j, interior_top);
  } else {
    while (j < interior_top && r > t.levels[j + 1]) ++j;
  }
  return {j, (r - t.levels[j]) * t.inverse_widths[j]};
}

/// The L2 norm or the largest magnitude of a bucket as the CPU encoder sums it: eight float
/// lanes (coordinate i into lane i mod 8, the tail past the last whole eight into lane 0),
/// then the lanes in double. `lane_total` is one lane's part, `combine_lanes` the rest.
QL_CODING_FUNCTION float lane_total(const float* v, std::int64_t size, int lane, bool l2) {
  float total = 0.0f;
  const std::int64_t whole = size / 8 * 8;
  for (std::int64_t i = lane; i < whole; i += 8) total = l2 ? total + v[i] * v[i] : max_float(total, magnitude(v[i]));
  if (lane == 0) {
    for (std::int64_t i = whole; i < size; ++i) total = l2 ? total + v[i] * v[i] : max_float(total, magnitude(v[i]));
  }
  return total;
}

QL_CODING_FUNCTION float combine_lanes(const float* lanes, bool l2) {
  double total = 0.0;
  for (int k = 0; k < 8; ++k) {
    const double lane = lanes[k];
    total = l2 ? total + lane : (total < lane ? lane : total);
  }
  return static_cast<float>(l2 ? sqrt(total) : total);
}

/// Codes group `group` (coordinates 8·group onwards, at most 8 of them) of a bucket of `size`
/// coordinates and writes its `t.bits` bytes, little-endian, at `out`.
QL_CODING_FUNCTION void encode_group(const float* bucket, std::int64_t size, std::int64_t group, float scale,
                                     std::uint32_t seed, const LevelTables& t, std::uint8_t* out) {
  std::uint64_t word = 0;
  const std::int64_t first = group * 8;
  const std::int64_t count = size - first < 8 ? size - first : 8;
  for (std::int64_t k = 0; k < count; ++k) {
    const auto index = static_cast<std::uint32_t>(first + k);
    const Rounding rounding = round_coordinate(bucket[first + k], scale, t);
    const std::int32_t code = rounding.lower + (rounding_draw(seed, index) < rounding.up ? 1 : 0);
    word |= static_cast<std::uint64_t>(code) << (t.bits * k);
  }
  for (int b = 0; b < t.bits; ++b) out[b] = static_cast<std::uint8_t>(word >> (8 * b));
}

/// out[0 .. 8) (at most size - 8·group of them) += the values group `group` of a bucket
/// stands for, each level times norm·weight (codes past the last level read as the top one).
QL_CODING_FUNCTION void decode_add_group(const std::uint8_t* codes, std::int64_t size, std::int64_t group,
                                         float norm_times_weight, const float* levels, int count, int bits,
                                         float* out) {
  std::uint64_t word = 0;
  for (int b = 0; b < bits; ++b) word |= static_cast<std::uint64_t>(codes[group * bits + b]) << (8 * b);
  const std::uint64_t mask = (std::uint64_t{1} << bits) - 1;
  const std::int64_t first = group * 8;
  const std::int64_t n = size - first < 8 ? size - first : 8;
  for (std::int64_t k = 0; k < n; ++k) {
    const auto code = static_cast<int>((word >> (bits * k)) & mask);
    out[k] += code < count ? norm_times_weight * levels[code] : norm_times_weight;
  }
}

}  // namespace ql::nuqsgd::coding
