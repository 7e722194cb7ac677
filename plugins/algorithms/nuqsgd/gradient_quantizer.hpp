// Stochastic gradient quantisation (docs/algorithms/nuqsgd.md, "The stochastic quantiser", "Level sets"): a gradient is cut into buckets of d
// coordinates; each full bucket becomes its norm (fp32) and, per coordinate, the index of one
// of K levels in [-1, 1], chosen between the two levels around g_i / norm with the probability
// that keeps the result unbiased. The indices are packed at ceil(log2 K) bits each, eight to a
// group of ceil(log2 K) bytes (a bucket's codes padded to whole groups); the last, partial bucket
// travels unquantised (the papers' ig_sm_bkts). Buckets are coded in parallel, each with its own
// counter-based random stream seeded from one draw of the caller's generator, so the result does
// not depend on the thread count. A gradient on a CUDA device is coded there by kernels that
// write the same bytes (cuda_codec.hpp), when the plugin was built with them; otherwise it is
// copied to the CPU first.
//
//   GradientQuantizer q(level_set(Scheme::nuq, 3), /*l2=*/true, 8192);
//   std::vector<uint8_t> wire = q.encode(gradient, generator);
//   at::Tensor back = q.decode(wire, gradient.numel());
#pragma once

#include "bucket_coding.hpp"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ql::nuqsgd {

/// The plugin's schemes (its `scheme` option): fixed level sets, adaptive ones (ALQ and AMQ,
/// norm-based or norm-less with `_n`), and full precision.
enum class Scheme { nuq, qsgd, qsgdinf, trn, alq, alq_n, amq, amq_n, none };
std::string_view to_string(Scheme scheme);
/// True for the schemes whose levels adapt to the gradients (ALQ, AMQ).
bool is_adaptive(Scheme scheme);
/// True for the schemes that normalise buckets by their L2 norm (else the max-abs norm).
bool uses_l2_norm(Scheme scheme);

/// The signed level set of a fixed scheme (ascending, -1 ... 1): qsgd/qsgdinf: 2^bits levels
/// equispaced; trn: {-1, 0, 1}; nuq: ±multiplier^j for j = 0 .. 2^(bits-1) - 1.
std::vector<double> level_set(Scheme scheme, int bits, double multiplier = 0.5);

/// Bits a coordinate takes on the wire for K levels: ceil(log2 K).
int code_bits(std::size_t levels);


class GradientQuantizer {
 public:
  GradientQuantizer(std::vector<double> levels, bool l2_norm, std::int64_t bucket_size);

  /// The wire encoding of a flat fp32 gradient (on the CPU or a CUDA device). Workers that
  /// draw from generators in the same state (data-parallel ranks) pass their number as
  /// `worker` to round independently.
  std::vector<std::uint8_t> encode(const at::Tensor& gradient, at::Generator& generator,
                                   std::uint64_t worker = 0) const;
  /// Throws ql::Error unless `encoded` can be the encoding of `numel` values: its size, every
  /// bucket's norm finite and not negative, the unquantised tail finite. (Codes past the last
  /// level cannot be told from bit errors; they decode as the top level.) decode and
  /// decode_add call it first.
  void check_encoding(const std::vector<std::uint8_t>& encoded, std::int64_t numel) const;
  /// The gradient an encoding stands for (`numel` values).
  at::Tensor decode(const std::vector<std::uint8_t>& encoded, std::int64_t numel) const;
  /// sum += weight x the gradient an encoding stands for (sum: contiguous fp32 of the
  /// gradient's size, on the CPU or a CUDA device); what a receiver averaging several workers
  /// does, without a temporary.
  void decode_add(const std::vector<std::uint8_t>& encoded, at::Tensor& sum, float weight = 1.0f) const;
  /// encode then decode: Q(g), what a receiver reconstructs.
  at::Tensor quantize(const at::Tensor& gradient, at::Generator& generator) const;
  /// Bytes of the encoding of `numel` values.
  std::int64_t encoded_size(std::int64_t numel) const;

  /// The level tables an encoder reads, in host memory: what the CUDA kernels read from
  /// device memory (the tests run the kernels' arithmetic on these).
  coding::LevelTables host_tables() const;

  const std::vector<double>& levels() const { return levels_; }
  bool l2_norm() const { return l2_norm_; }
  std::int64_t bucket_size() const { return bucket_size_; }
  int bits() const { return bits_; }

 private:
  std::int64_t bucket_bytes() const;
  // The full buckets of an encoding of `numel` values into (or added to) out[0 .. buckets·d).
  void decode_into(const std::vector<std::uint8_t>& encoded, std::int64_t numel, float* out, bool accumulate,
                   float weight) const;
  std::vector<std::uint8_t> encode_on_device(const at::Tensor& gradient, std::uint64_t base) const;
  void decode_add_on_device(const std::vector<std::uint8_t>& encoded, at::Tensor& sum, float weight) const;
  // The level tables in the memory of `like`'s device, uploaded on first use there. One
  // quantizer codes on one thread at a time (the host's gradient exchange does).
  void upload_tables(const at::Tensor& like) const;

  std::vector<double> levels_;
  std::vector<float> float_levels_;
  std::vector<float> inverse_widths_;  // 1 / (l_{j+1} - l_j)
  std::vector<float> padded_levels_;   // the levels, then +inf
  std::vector<std::int32_t> search_;   // level-search table over [-1, 1]
  int search_cells_ = 0;
  float uniform_inverse_width_ = 0.0f; // equispaced levels: 1 / spacing
  bool halving_ = false;               // levels ±2^-j (NUQSGD with p = 1/2)
  mutable at::Tensor device_levels_, device_inverse_widths_, device_search_;
  bool l2_norm_;
  std::int64_t bucket_size_;
  int bits_;
};

}  // namespace ql::nuqsgd
