// Key functions (out-of-line virtual destructors) of every SDK interface, so that their
// vtables and typeinfo live once, in libqlsdk.so, and not in each plugin.
#include "quantlab/sdk/algorithm.hpp"
#include "quantlab/sdk/context.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/log.hpp"
#include "quantlab/sdk/problem.hpp"
#include "quantlab/sdk/quantizer.hpp"
#include "quantlab/sdk/topology.hpp"

#include <c10/util/Exception.h>
#include <torch/utils.h>

#include <fnmatch.h>

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <random>

namespace ql {

std::string message_of(const std::exception& error) {
  if (const auto* torch_error = dynamic_cast<const c10::Error*>(&error)) {
    return torch_error->what_without_backtrace();
  }
  return error.what();
}

Error::~Error() = default;
ConfigError::~ConfigError() = default;
Quantizer::~Quantizer() = default;
Dataset::~Dataset() = default;
Problem::~Problem() = default;
Topology::~Topology() = default;
Algorithm::~Algorithm() = default;
Calibration::~Calibration() = default;
GradientCodec::~GradientCodec() = default;

void GradientCodec::decode_add(const std::vector<std::uint8_t>& encoded, double weight, at::Tensor& sum) {
  sum.add_(decode(encoded, sum.numel()).to(sum.device()), weight);
}
Context::~Context() = default;
Log::~Log() = default;

namespace {

class StderrLog : public Log {
 public:
  void log(LogLevel level, std::string_view message) override {
    if (level == LogLevel::warning) std::fprintf(stderr, "warning: %.*s\n", static_cast<int>(message.size()), message.data());
  }
};

}  // namespace

Log& stderr_log() {
  static StderrLog log;
  return log;
}

double Variant::value(std::string_view name) const {
  for (const auto& [column, value] : values) {
    if (column == name) return value;
  }
  std::vector<std::string> columns;
  for (const auto& [column, value] : values) columns.push_back(column);
  throw Error(fmt::format("variant '{}' has no value '{}' (it has: {})", label, name, fmt::join(columns, ", ")));
}

std::string_view to_string(Split split) {
  switch (split) {
    case Split::train: return "train";
    case Split::valid: return "valid";
    case Split::test: return "test";
  }
  return "unknown";
}

std::shared_ptr<const Dataset> Splits::of(Split split) const {
  switch (split) {
    case Split::train: return train;
    case Split::valid: return valid;
    case Split::test: return test;
  }
  return nullptr;
}

std::vector<std::int64_t> seeded_permutation(std::int64_t n, std::uint64_t seed) {
  std::vector<std::int64_t> order(static_cast<std::size_t>(std::max<std::int64_t>(n, 0)));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 engine(seed);
  for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[engine() % i]);
  return order;
}

std::vector<std::string> Problem::metrics() const {
  const DatasetSpec s = spec();
  if (s.task == Task::regression) return {};
  if (s.num_classes > 5) return {"top1", "top5"};
  return {"top1"};
}

Network::~Network() = default;

std::string Network::export_onnx(onnx::Graph& /*graph*/, const std::string& /*input*/) {
  throw Error("this topology's network has no ONNX export (it does not override ql::Network::export_onnx)");
}

at::Tensor Network::apply(const at::Tensor& input) {
  if (input_quantizer_) return forward(input_quantizer_->forward(input));
  return forward(input);
}

void Network::set_input_quantizer(std::shared_ptr<Quantizer> quantizer) {
  input_quantizer_ = std::move(quantizer);
}

bool matches_any(std::string_view name, const std::vector<std::string>& patterns) {
  const std::string text(name);
  return std::any_of(patterns.begin(), patterns.end(),
                     [&](const std::string& pattern) { return fnmatch(pattern.c_str(), text.c_str(), 0) == 0; });
}

Network::NamedLayers Network::select_layers(const std::vector<std::string>& include,
                                            const std::vector<std::string>& exclude) {
  NamedLayers chosen;
  for (auto& [name, layer] : quantizable_layers()) {
    if (matches_any(name, include) && !matches_any(name, exclude)) chosen.emplace_back(name, std::move(layer));
  }
  return chosen;
}

// Once the layer has its input, every quantisable layer skips its work for the rest of the pass
// (their outputs are zeros of the right shape): no exception travels through network code.
at::Tensor Network::layer_input(nn::QuantizableLayer& layer, const at::Tensor& inputs) {
  at::Tensor captured;
  auto done = std::make_shared<bool>(false);
  const NamedLayers layers = quantizable_layers();
  for (const auto& named : layers) named.second->set_skip_flag(done);
  layer.set_input_observer([&captured, done](const at::Tensor& input) {
    if (captured.defined()) return;
    captured = input.detach();
    *done = true;
  });
  auto reset = [&] {
    layer.set_input_observer(nullptr);
    for (const auto& named : layers) named.second->set_skip_flag(nullptr);
  };
  try {
    torch::NoGradGuard no_grad;
    apply(inputs);
  } catch (...) {
    reset();
    throw;
  }
  reset();
  QL_CHECK(captured.defined(), "the forward pass never reached layer {} (is it part of the network?)",
           to_string(layer.kind()));
  return captured;
}

Network::NamedLayers Network::quantizable_layers() {
  NamedLayers layers;
  for (const auto& item : named_modules("", /*include_self=*/false)) {
    if (auto layer = std::dynamic_pointer_cast<nn::QuantizableLayer>(item.value())) {
      layers.emplace_back(item.key(), std::move(layer));
    }
  }
  return layers;
}

}  // namespace ql
