// The gradient codec on a CUDA device: the same stream as GradientQuantizer's CPU encoder,
// byte for byte (bucket_coding.hpp holds the arithmetic both run). Pointers are device memory;
// `stream` is the cudaStream_t to run on. Each function returns nullptr, or CUDA's message
// when a launch failed. No CUDA types here, so that the plugin's C++ files need no CUDA headers.
#pragma once

#include "bucket_coding.hpp"

#include <cstdint>

namespace ql::nuqsgd::cuda {

/// The layout of an encoding of `numel` values: `buckets` full buckets of `bucket_size`, each
/// a 4-byte norm (all norms first), then each bucket's `bucket_bytes` of codes, then the
/// unquantised tail of numel - buckets · bucket_size floats.
struct StreamLayout {
  std::int64_t numel;
  std::int64_t bucket_size;
  std::int64_t buckets;
  std::int64_t bucket_bytes;
};

/// Writes the encoding of `gradient` (fp32) into `out` (every byte of it); `base` is the
/// step's draw, each bucket's rounding stream seeded from it as on the CPU.
const char* encode(const float* gradient, const StreamLayout& layout, bool l2_norm, std::uint64_t base,
                   const coding::LevelTables& tables, std::uint8_t* out, void* stream);

/// sum += weight x the values `encoded` stands for.
const char* decode_add(const std::uint8_t* encoded, const StreamLayout& layout, const float* levels, int count,
                       int bits, float weight, float* sum, void* stream);

}  // namespace ql::nuqsgd::cuda
