#include "quantlab/core/gradient_exchange.hpp"

#include "quantlab/core/data_parallel.hpp"
#include "quantlab/sdk/algorithm.hpp"
#include "quantlab/sdk/error.hpp"

#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace ql::core {

namespace {

// The gradients of `parameters` as one flat fp32 vector (zeros where a gradient is undefined).
at::Tensor flat_gradient(const std::vector<at::Tensor>& parameters) {
  std::vector<at::Tensor> parts;
  for (const at::Tensor& p : parameters) {
    parts.push_back(p.grad().defined() ? p.grad().detach().flatten().to(torch::kFloat32)
                                       : torch::zeros({p.numel()}, p.options().dtype(torch::kFloat32)));
  }
  return torch::cat(parts);
}

void set_gradient(const std::vector<at::Tensor>& parameters, const at::Tensor& flat) {
  std::int64_t offset = 0;
  for (const at::Tensor& p : parameters) {
    const at::Tensor part = flat.slice(0, offset, offset + p.numel()).view(p.sizes()).to(p.dtype());
    if (p.grad().defined()) p.mutable_grad().detach().copy_(part);
    else p.mutable_grad() = part.clone();
    offset += p.numel();
  }
}

// One process, one minibatch a step: the gradient is what backward left.
class LocalExchange : public GradientExchange {
 public:
  StepTotals finish_step(const std::vector<at::Tensor>& /*parameters*/, const StepTotals& local,
                         c10::Device /*device*/) override {
    ++stats_.steps;
    return local;
  }
};

// `workers` minibatch gradients a step, each sent through the codec (encoded and decoded) when
// there is one, then averaged: data-parallel SGD simulated in one process.
class SimulatedWorkers : public GradientExchange {
 public:
  SimulatedWorkers(std::int64_t workers, std::shared_ptr<GradientCodec> codec)
      : workers_(workers), codec_(std::move(codec)) {}

  std::int64_t batches_per_step() const override { return workers_; }

  void end_minibatch(const std::vector<at::Tensor>& parameters) override {
    torch::NoGradGuard no_grad;
    // Coded where it was computed: a codec with device kernels sends only the stream across.
    at::Tensor gradient = flat_gradient(parameters);
    at::Tensor received = gradient;
    if (codec_) {
      if (codec_->wants_gradients()) codec_->observe(gradient);
      const std::vector<std::uint8_t> wire = codec_->encode(gradient);
      received = torch::zeros_like(gradient);
      codec_->decode_add(wire, 1.0, received);
      stats_.wire_bytes += static_cast<double>(wire.size());
      stats_.coordinates += static_cast<double>(gradient.numel());
      stats_.quantization_error2 += (received - gradient).square().sum().item<double>();
    }
    stats_.gradient_norm2 += gradient.square().sum().item<double>();
    exact_.push_back(gradient);
    sum_ = sum_.defined() ? sum_.add_(received) : received.clone();
  }

  StepTotals finish_step(const std::vector<at::Tensor>& parameters, const StepTotals& local,
                         c10::Device device) override {
    torch::NoGradGuard no_grad;
    sum_.div_(static_cast<double>(exact_.size()));
    const at::Tensor exact = torch::stack(exact_);
    stats_.worker_spread2 += (exact - exact.mean(0)).square().sum().item<double>();
    set_gradient(parameters, sum_.to(device));
    exact_.clear();
    sum_ = at::Tensor();
    ++stats_.steps;
    return local;
  }

 protected:
  bool encodes() const override { return codec_ != nullptr; }

 private:
  std::int64_t workers_;
  std::shared_ptr<GradientCodec> codec_;
  std::vector<at::Tensor> exact_;  // this step's worker gradients
  at::Tensor sum_;                 // of what the workers' gradients decode to
};

// One rank of data-parallel training. Without a codec every rank sums count·ḡ over the ranks
// (bucketed all-reduce) and divides by the global count: the gradient of the global batch's
// mean loss, also for an uneven last batch. With a codec every rank encodes its own mean
// gradient, the packed streams are all-gathered, and each rank decodes and averages them
// (weighted by count) alike.
class CollectiveExchange : public GradientExchange {
 public:
  CollectiveExchange(DataParallel& world, std::shared_ptr<GradientCodec> codec)
      : world_(world), codec_(std::move(codec)) {
    if (codec_) codec_->set_worker(world_.rank(), world_.size());
  }

  bool collective() const override { return true; }

  // Every rank contributes to every step, even one whose shard of the batch is empty.
  void begin_step(torch::optim::Optimizer& optimizer, const std::vector<at::Tensor>& parameters) override {
    optimizer.zero_grad();
    for (const at::Tensor& p : parameters) {
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    }
  }
  void begin_minibatch(torch::optim::Optimizer& /*optimizer*/) override {}

  StepTotals finish_step(const std::vector<at::Tensor>& parameters, const StepTotals& local,
                         c10::Device device) override {
    torch::NoGradGuard no_grad;
    std::vector<double> totals{local.loss_sum, local.correct, local.samples, local.stop ? 1.0 : 0.0};
    if (codec_) {
      gather_encoded(parameters, totals, device);
    } else {
      all_reduce(parameters, totals);
    }
    ++stats_.steps;
    return {totals[0], totals[1], totals[2], totals[3] > 0};
  }

 protected:
  bool encodes() const override { return codec_ != nullptr; }

 private:
  void all_reduce(const std::vector<at::Tensor>& parameters, std::vector<double>& totals) {
    std::vector<at::Tensor> gradients;
    for (const at::Tensor& p : parameters) gradients.push_back(p.mutable_grad());
    for (at::Tensor& g : gradients) g.mul_(totals[2]);
    world_.all_reduce_sum(totals);
    world_.all_reduce_sum(gradients);
    QL_CHECK(totals[2] > 0, "data-parallel step {} had no samples on any rank", stats_.steps + 1);
    std::int64_t numel = 0;
    for (at::Tensor& g : gradients) {
      g.div_(totals[2]);
      numel += g.numel();
    }
    stats_.wire_bytes += 4.0 * static_cast<double>(numel);
    stats_.coordinates += static_cast<double>(numel);
    stats_.sent_bytes += ring_all_reduce_bytes(4.0 * static_cast<double>(numel), world_.size());
  }

  void gather_encoded(const std::vector<at::Tensor>& parameters, std::vector<double>& totals, c10::Device device) {
    const at::Tensor gradient = flat_gradient(parameters);
    const std::vector<at::Tensor> counts = world_.all_gather(torch::tensor(totals, torch::kFloat64));
    totals.assign(totals.size(), 0.0);
    for (const at::Tensor& c : counts) {
      for (std::size_t i = 0; i < totals.size(); ++i) totals[i] += c[static_cast<std::int64_t>(i)].item<double>();
    }
    QL_CHECK(totals[2] > 0, "data-parallel step {} had no samples on any rank", stats_.steps + 1);
    if (codec_->wants_gradients()) {
      for (const at::Tensor& g : world_.all_gather(gradient)) codec_->observe(g);
      stats_.sent_bytes += ring_all_gather_bytes(4.0 * static_cast<double>(gradient.numel()), world_.size());
    }
    const std::vector<std::uint8_t> wire = codec_->encode(gradient);
    const auto streams = world_.all_gather(wire);
    at::Tensor average = torch::zeros_like(gradient);
    for (std::size_t r = 0; r < streams.size(); ++r) {
      const double weight = counts[r][2].item<double>() / totals[2];
      if (weight == 0) continue;
      if (static_cast<int>(r) != world_.rank()) {
        codec_->decode_add(streams[r], weight, average);
        continue;
      }
      // This rank's own stream is decoded once, for the sum and for its quantisation error.
      at::Tensor mine = torch::zeros_like(gradient);
      codec_->decode_add(wire, 1.0, mine);
      average.add_(mine, weight);
      stats_.quantization_error2 += (mine - gradient).square().sum().item<double>();
    }
    stats_.wire_bytes += static_cast<double>(wire.size());
    stats_.coordinates += static_cast<double>(gradient.numel());
    stats_.sent_bytes += ring_all_gather_bytes(static_cast<double>(wire.size()), world_.size());
    stats_.gradient_norm2 += gradient.square().sum().item<double>();
    set_gradient(parameters, average.to(device));
  }

  DataParallel& world_;
  std::shared_ptr<GradientCodec> codec_;
};

}  // namespace

GradientExchange::~GradientExchange() = default;

void GradientExchange::begin_step(torch::optim::Optimizer& /*optimizer*/, const std::vector<at::Tensor>& /*parameters*/) {}

void GradientExchange::begin_minibatch(torch::optim::Optimizer& optimizer) { optimizer.zero_grad(); }

std::vector<std::pair<std::string, double>> GradientExchange::epoch_metrics() const {
  const ExchangeStats& s = stats_;
  const double steps = std::max<double>(1.0, static_cast<double>(s.steps));
  std::vector<std::pair<std::string, double>> metrics;
  if (s.sent_bytes > 0) metrics.emplace_back("train/sent_bytes_per_step", s.sent_bytes / steps);
  if (s.coordinates > 0) {
    const double bits = 8.0 * s.wire_bytes / s.coordinates;
    metrics.emplace_back("train/bits_per_coordinate", bits);
    metrics.emplace_back("train/compression_ratio", 32.0 / bits);
    metrics.emplace_back("train/wire_bytes_per_step", s.wire_bytes / steps);
    metrics.emplace_back("train/quantization_nvar", s.quantization_error2 / std::max(s.gradient_norm2, 1e-30));
  }
  if (batches_per_step() > 1) {
    metrics.emplace_back("train/sgd_nvar", s.worker_spread2 / std::max(s.gradient_norm2, 1e-30));
  }
  return metrics;
}

std::string GradientExchange::epoch_summary() const {
  if (!encodes() || stats_.coordinates <= 0) return {};
  return fmt::format("{:.2f} bits/coord, quantisation nvar {:.3g}", 8.0 * stats_.wire_bytes / stats_.coordinates,
                     stats_.quantization_error2 / std::max(stats_.gradient_norm2, 1e-30));
}

void check_exchange_settings(std::int64_t simulated_workers, bool data_parallel) {
  if (simulated_workers > 1 && data_parallel) {
    throw ConfigError("training.simulated_workers > 1 and data-parallel ranks do not mix; use one of them");
  }
}

std::unique_ptr<GradientExchange> make_gradient_exchange(std::int64_t simulated_workers,
                                                         std::shared_ptr<GradientCodec> codec, DataParallel* world) {
  check_exchange_settings(simulated_workers, world != nullptr);
  if (world != nullptr) return std::make_unique<CollectiveExchange>(*world, std::move(codec));
  if (codec != nullptr || simulated_workers > 1) {
    return std::make_unique<SimulatedWorkers>(simulated_workers, std::move(codec));
  }
  return std::make_unique<LocalExchange>();
}

}  // namespace ql::core
