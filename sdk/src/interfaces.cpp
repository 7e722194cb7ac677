// Key functions (out-of-line virtual destructors) of every SDK interface, so that their
// vtables and typeinfo live once, in libqlsdk.so, and not in each plugin.
#include "quantlab/sdk/algorithm.hpp"
#include "quantlab/sdk/context.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/problem.hpp"
#include "quantlab/sdk/quantizer.hpp"
#include "quantlab/sdk/topology.hpp"

#include <c10/util/Exception.h>

#include <algorithm>
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
  sum.add_(decode(encoded, sum.numel()), weight);
}
Context::~Context() = default;

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
  if (spec().num_classes > 5) return {"top1", "top5"};
  return {"top1"};
}

Network::~Network() = default;

at::Tensor Network::apply(const at::Tensor& input) {
  if (input_quantizer_) return forward(input_quantizer_->forward(input));
  return forward(input);
}

void Network::set_input_quantizer(std::shared_ptr<Quantizer> quantizer) {
  input_quantizer_ = std::move(quantizer);
}

std::vector<std::pair<std::string, std::shared_ptr<nn::QuantizableLayer>>>
Network::quantizable_layers() {
  std::vector<std::pair<std::string, std::shared_ptr<nn::QuantizableLayer>>> layers;
  for (const auto& item : named_modules("", /*include_self=*/false)) {
    if (auto layer = std::dynamic_pointer_cast<nn::QuantizableLayer>(item.value())) {
      layers.emplace_back(item.key(), std::move(layer));
    }
  }
  return layers;
}

}  // namespace ql
