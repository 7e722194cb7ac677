// Gradient codec throughput: encode + decode of a flat fp32 gradient by the nuqsgd quantiser
// (each scheme; decode adds into a reused sum, as a receiver averaging workers does), against
// memcpy of the same buffer, in one run; and the bytes a step would send against fp32. With DEVICE
// cuda the gradient lives on the GPU, the decoded sum goes back to it, and the baseline is a
// device-to-device copy. Usage: gradient_codec [MILLION_VALUES] [BUCKET] [THREADS] [DEVICE]
#include "plugins/algorithms/nuqsgd/gradient_quantizer.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/types.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

template <typename F>
double best_seconds(int repeats, F&& run) {
  double best = 1e30;
  for (int i = 0; i < repeats; ++i) {
    const auto start = Clock::now();
    run();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - start).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t values = (argc > 1 ? std::stoll(argv[1]) : 16) * 1'000'000;
  const std::int64_t bucket = argc > 2 ? std::stoll(argv[2]) : 8192;
  at::set_num_threads(argc > 3 ? std::stoi(argv[3]) : 2);
  const c10::Device device(argc > 4 ? argv[4] : "cpu");
  auto synchronize = [&] {
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  torch::manual_seed(0);
  const at::Tensor gradient = (torch::randn({values}) * 1e-3).to(device);
  const double gigabytes = static_cast<double>(values) * 4 / 1e9;

  std::vector<float> copy(static_cast<std::size_t>(values));
  at::Tensor on_device = torch::empty_like(gradient);
  const double memcpy_seconds = best_seconds(5, [&] {
    if (device.is_cuda()) {
      on_device.copy_(gradient);
      synchronize();
    } else {
      std::memcpy(copy.data(), gradient.data_ptr<float>(), static_cast<std::size_t>(values) * 4);
    }
  });
  const char* baseline = device.is_cuda() ? "device-to-device copy" : "memcpy";
  fmt::print("gradient codec on {}, {} M fp32 values, buckets of {}, {} threads (best of 5)\n", device.str(),
             values / 1'000'000, bucket, at::get_num_threads());
  fmt::print("| codec | GB/s of encode + decode (encode alone + decode alone) | of {} | bits/coord | bytes vs fp32 |\n| --- | ---: | ---: | ---: | ---: |\n",
             baseline);
  fmt::print("| {} | {:.2f} | 1.00 | 32 | 1.0x |\n", baseline, gigabytes / memcpy_seconds);
  using ql::nuqsgd::Scheme;
  for (const auto& [scheme, bits] : std::vector<std::pair<Scheme, int>>{{Scheme::qsgd, 4}, {Scheme::nuq, 4}, {Scheme::nuq, 3}, {Scheme::qsgdinf, 3}, {Scheme::trn, 2}}) {
    ql::nuqsgd::GradientQuantizer quantizer(ql::nuqsgd::level_set(scheme, bits), ql::nuqsgd::uses_l2_norm(scheme),
                                            bucket);
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(1);
    // What a receiver does: decode each worker's stream into the running sum (a reused buffer).
    std::vector<std::uint8_t> wire;
    at::Tensor sum = torch::zeros({values});
    double encode_seconds = 1e30, decode_seconds = 1e30;
    const double seconds = best_seconds(5, [&] {
      const auto start = Clock::now();
      wire = quantizer.encode(gradient, generator);
      const auto encoded = Clock::now();
      quantizer.decode_add(wire, sum);
      if (device.is_cuda()) {
        on_device.copy_(sum);  // the averaged gradient back where the optimiser steps
        synchronize();
      }
      encode_seconds = std::min(encode_seconds, std::chrono::duration<double>(encoded - start).count());
      decode_seconds = std::min(decode_seconds, std::chrono::duration<double>(Clock::now() - encoded).count());
    });
    fmt::print("| {} {} bits | {:.2f} ({:.2f} + {:.2f}) | {:.2f} | {:.2f} | {:.1f}x fewer |\n", ql::nuqsgd::to_string(scheme), bits,
               gigabytes / seconds, gigabytes / encode_seconds, gigabytes / decode_seconds,
               memcpy_seconds / seconds, 8.0 * static_cast<double>(wire.size()) / static_cast<double>(values),
               static_cast<double>(values) * 4 / static_cast<double>(wire.size()));
  }
  return 0;
}
