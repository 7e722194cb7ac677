// CUDA kernels of the gradient codec (cuda_codec.hpp). One thread per eight coordinates (one
// group of packed codes), so that no two threads write the same byte; the norms first, one
// thread per lane of the CPU's eight-lane sum, since a float sum depends on its order.
#include "cuda_codec.hpp"

#include <cuda_runtime.h>

#include <cstring>

namespace ql::nuqsgd::cuda {
namespace {

constexpr int kThreads = 256;

unsigned int blocks_for(std::int64_t threads) {
  return static_cast<unsigned int>((threads + kThreads - 1) / kThreads);
}

// The eight lanes of a bucket are neighbouring threads of one block (kThreads is a multiple
// of 8); lane 0 combines them.
__global__ void bucket_norms(const float* gradient, std::int64_t buckets, std::int64_t bucket_size, bool l2,
                             float* norms) {
  __shared__ float lanes[kThreads];
  const std::int64_t thread = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const std::int64_t bucket = thread / 8;
  const int lane = static_cast<int>(thread % 8);
  lanes[threadIdx.x] = bucket < buckets ? coding::lane_total(gradient + bucket * bucket_size, bucket_size, lane, l2)
                                        : 0.0f;
  __syncthreads();
  if (bucket < buckets && lane == 0) norms[bucket] = coding::combine_lanes(lanes + threadIdx.x, l2);
}

__global__ void encode_groups(const float* gradient, StreamLayout layout, std::uint64_t base,
                              coding::LevelTables tables, const float* norms, std::uint8_t* codes) {
  const std::int64_t groups = (layout.bucket_size + 7) / 8;
  const std::int64_t thread = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (thread >= layout.buckets * groups) return;
  const std::int64_t bucket = thread / groups, group = thread % groups;
  const float scale = 1.0f / (norms[bucket] + 1e-7f);
  coding::encode_group(gradient + bucket * layout.bucket_size, layout.bucket_size, group, scale,
                       coding::bucket_seed(base, bucket), tables,
                       codes + bucket * layout.bucket_bytes + group * tables.bits);
}

__global__ void decode_add_groups(const std::uint8_t* encoded, StreamLayout layout, const float* levels, int count,
                                  int bits, float weight, float* sum) {
  const std::int64_t groups = (layout.bucket_size + 7) / 8;
  const std::int64_t thread = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (thread >= layout.buckets * groups) return;
  const std::int64_t bucket = thread / groups, group = thread % groups;
  float norm;
  memcpy(&norm, encoded + bucket * 4, 4);
  const std::uint8_t* codes = encoded + layout.buckets * 4 + bucket * layout.bucket_bytes;
  coding::decode_add_group(codes, layout.bucket_size, group, norm * weight, levels, count, bits,
                           sum + bucket * layout.bucket_size + group * 8);
}

// The unquantised tail: sum += weight x value, the CPU's order (no fused multiply-add).
__global__ void add_tail(const std::uint8_t* tail, std::int64_t count, float weight, float* sum) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= count) return;
  float value;
  memcpy(&value, tail + i * 4, 4);
  sum[i] += weight * value;
}

const char* launched() {
  const cudaError_t status = cudaGetLastError();
  return status == cudaSuccess ? nullptr : cudaGetErrorString(status);
}

}  // namespace

const char* encode(const float* gradient, const StreamLayout& layout, bool l2_norm, std::uint64_t base,
                   const coding::LevelTables& tables, std::uint8_t* out, void* stream_handle) {
  const auto stream = static_cast<cudaStream_t>(stream_handle);
  auto* norms = reinterpret_cast<float*>(out);
  const std::int64_t coded = layout.buckets * layout.bucket_size;
  if (layout.buckets > 0) {
    bucket_norms<<<blocks_for(layout.buckets * 8), kThreads, 0, stream>>>(gradient, layout.buckets, layout.bucket_size,
                                                                         l2_norm, norms);
    if (const char* error = launched()) return error;
    const std::int64_t groups = layout.buckets * ((layout.bucket_size + 7) / 8);
    encode_groups<<<blocks_for(groups), kThreads, 0, stream>>>(gradient, layout, base, tables, norms,
                                                               out + layout.buckets * 4);
    if (const char* error = launched()) return error;
  }
  if (layout.numel > coded) {
    const cudaError_t status =
        cudaMemcpyAsync(out + layout.buckets * (4 + layout.bucket_bytes), gradient + coded,
                        static_cast<std::size_t>(layout.numel - coded) * 4, cudaMemcpyDeviceToDevice, stream);
    if (status != cudaSuccess) return cudaGetErrorString(status);
  }
  return nullptr;
}

const char* decode_add(const std::uint8_t* encoded, const StreamLayout& layout, const float* levels, int count,
                       int bits, float weight, float* sum, void* stream_handle) {
  const auto stream = static_cast<cudaStream_t>(stream_handle);
  const std::int64_t coded = layout.buckets * layout.bucket_size;
  if (layout.buckets > 0) {
    const std::int64_t groups = layout.buckets * ((layout.bucket_size + 7) / 8);
    decode_add_groups<<<blocks_for(groups), kThreads, 0, stream>>>(encoded, layout, levels, count, bits, weight, sum);
    if (const char* error = launched()) return error;
  }
  if (layout.numel > coded) {
    add_tail<<<blocks_for(layout.numel - coded), kThreads, 0, stream>>>(
        encoded + layout.buckets * (4 + layout.bucket_bytes), layout.numel - coded, weight, sum + coded);
    if (const char* error = launched()) return error;
  }
  return nullptr;
}

}  // namespace ql::nuqsgd::cuda
