#include "quantlab/core/conformance.hpp"

#include "quantlab/core/batch_loader.hpp"
#include "quantlab/core/cli.hpp"
#include "quantlab/core/experiment_config.hpp"
#include "quantlab/core/experiment_store.hpp"
#include "quantlab/core/trainer.hpp"
#include "quantlab/sdk/algorithm.hpp"
#include "quantlab/sdk/error.hpp"
#include "run/artifacts.hpp"
#include "run/scratch_folder.hpp"

#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/types.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <sstream>

namespace ql::core {

namespace {

class Checker {
 public:
  explicit Checker(ConformanceReport& report) : report_(report) {}

  // Runs `check`; a false result or an exception is a failure with `why`/the message.
  template <typename Check>
  bool operator()(const std::string& name, Check&& check) {
    try {
      std::string why;
      if (check(why)) {
        report_.lines.push_back("ok   " + name);
        return true;
      }
      fail(name, why);
    } catch (const std::exception& e) {
      fail(name, one_line(message_of(e)));
    }
    return false;
  }

 private:
  void fail(const std::string& name, const std::string& why) {
    report_.lines.push_back(fmt::format("FAIL {}: {}", name, why));
    ++report_.failures;
  }
  ConformanceReport& report_;
};

std::string shape_of(c10::IntArrayRef sizes) { return fmt::format("[{}]", fmt::join(sizes, ", ")); }

std::int64_t numel_of(const std::vector<std::int64_t>& shape) {
  return std::accumulate(shape.begin(), shape.end(), std::int64_t{1}, std::multiplies<>());
}

void check_problem(Checker& check, Problem& problem) {
  DatasetSpec spec;
  if (!check("spec has classes (or target components) and an input shape", [&](std::string& why) {
        spec = problem.spec();
        why = fmt::format("{} classes, {} target components, input rank {}", spec.num_classes, spec.target_size,
                          spec.input_shape.size());
        const bool outputs = spec.task == Task::regression ? spec.target_size >= 1 && spec.num_classes == 0
                                                           : spec.num_classes >= 2 && spec.target_size == 0;
        return outputs && !spec.input_shape.empty() && numel_of(spec.input_shape) > 0;
      })) {
    return;
  }
  check("class names match the number of classes", [&](std::string& why) {
    why = fmt::format("{} names for {} classes", spec.class_names.size(), spec.num_classes);
    return spec.class_names.empty() || static_cast<std::int64_t>(spec.class_names.size()) == spec.num_classes;
  });
  check("token problems give a vocabulary size", [&](std::string& why) {
    why = "vocabulary_size must be positive for token inputs";
    return spec.input_kind != InputKind::tokens || spec.vocabulary_size > 0;
  });
  if (!check("has a non-empty training split", [&](std::string& why) {
        auto train = problem.dataset(Split::train, stderr_log());
        why = train ? "it is empty" : "dataset(train) is null";
        return train && train->size() > 0;
      })) {
    return;
  }
  for (Split split : {Split::train, Split::valid, Split::test}) {
    std::shared_ptr<const Dataset> data;
    check(std::string(to_string(split)) + ": dataset() answers", [&](std::string&) {
      data = problem.dataset(split, stderr_log());
      return true;
    });
    if (!data || data->size() == 0) continue;
    const std::string s(to_string(split));
    const std::int64_t count = std::min<std::int64_t>(8, data->size());
    const at::Tensor indices = torch::arange(count, torch::kInt64);
    Batch batch;
    if (!check(s + ": batch of " + std::to_string(count) + " has the spec's shape and dtypes", [&](std::string& why) {
          batch = data->get_batch(indices, 1, false);
          std::vector<std::int64_t> expected{count};
          expected.insert(expected.end(), spec.input_shape.begin(), spec.input_shape.end());
          const auto dtype = spec.input_kind == InputKind::tokens ? torch::kInt64 : torch::kFloat32;
          const bool regression = spec.task == Task::regression;
          const std::vector<std::int64_t> targets =
              regression ? std::vector<std::int64_t>{count, spec.target_size} : std::vector<std::int64_t>{count};
          const auto target_dtype = regression ? torch::kFloat32 : torch::kInt64;
          why = fmt::format("inputs {} {}, targets {} {}; expected inputs {} {}, targets {} {}",
                            shape_of(batch.inputs.sizes()), c10::toString(batch.inputs.scalar_type()),
                            shape_of(batch.targets.sizes()), c10::toString(batch.targets.scalar_type()),
                            shape_of(expected), c10::toString(dtype), shape_of(targets), c10::toString(target_dtype));
          return batch.inputs.defined() && batch.inputs.sizes() == c10::IntArrayRef(expected) &&
                 batch.inputs.scalar_type() == dtype && batch.targets.defined() &&
                 batch.targets.sizes() == c10::IntArrayRef(targets) && batch.targets.scalar_type() == target_dtype;
        })) {
      continue;
    }
    if (spec.task == Task::regression) {
      check(s + ": targets are finite", [&](std::string& why) {
        why = "NaN or Inf in the targets";
        return torch::isfinite(batch.targets).all().item<bool>();
      });
    } else {
      check(s + ": labels are in [0, classes)", [&](std::string& why) {
        why = fmt::format("labels from {} to {}", batch.targets.min().item<std::int64_t>(),
                          batch.targets.max().item<std::int64_t>());
        return batch.targets.min().item<std::int64_t>() >= 0 &&
               batch.targets.max().item<std::int64_t>() < spec.num_classes;
      });
    }
    if (spec.input_kind == InputKind::image) {
      check(s + ": inputs are finite", [&](std::string& why) {
        why = "NaN or Inf in the inputs";
        return torch::isfinite(batch.inputs).all().item<bool>();
      });
    }
    check(s + ": same indices and seed give the same batch", [&](std::string& why) {
      why = "two calls differ";
      const Batch a = data->get_batch(indices, 7, split == Split::train);
      const Batch b = data->get_batch(indices, 7, split == Split::train);
      return a.inputs.equal(b.inputs) && a.targets.equal(b.targets);
    });
  }
}

// The specs a topology is offered, smallest first; it must accept at least one.
std::vector<DatasetSpec> candidate_specs() {
  std::vector<DatasetSpec> specs;
  for (auto [shape, classes] : std::vector<std::pair<std::vector<std::int64_t>, std::int64_t>>{
           {{1, 28, 28}, 10}, {{3, 32, 32}, 10}, {{3, 224, 224}, 1000}}) {
    DatasetSpec spec;
    spec.input_shape = shape;
    spec.num_classes = classes;
    specs.push_back(spec);
  }
  DatasetSpec tokens;
  tokens.input_kind = InputKind::tokens;
  tokens.input_shape = {20};
  tokens.num_classes = 18;
  tokens.vocabulary_size = 60;
  specs.push_back(tokens);
  return specs;
}

at::Tensor sample_inputs(const DatasetSpec& spec, std::int64_t count) {
  std::vector<std::int64_t> shape{count};
  shape.insert(shape.end(), spec.input_shape.begin(), spec.input_shape.end());
  if (spec.input_kind == InputKind::tokens) return torch::randint(0, spec.vocabulary_size, shape, torch::kInt64);
  return torch::randn(shape);
}

void check_topology(Checker& check, Topology& topology) {
  std::shared_ptr<Network> network;
  DatasetSpec spec;
  std::vector<DatasetSpec> accepted;
  std::vector<std::string> refusals;
  if (!check("builds a network for a standard spec", [&](std::string& why) {
        for (const DatasetSpec& candidate : candidate_specs()) {
          try {
            auto built = topology.build(candidate);
            if (!built) {
              why = "build() returned nothing";
              return false;
            }
            if (!network) {
              network = built;
              spec = candidate;
            }
            accepted.push_back(candidate);
          } catch (const ConfigError& e) {
            refusals.push_back(e.what());  // refusing a spec it cannot serve is allowed
          }
        }
        why = fmt::format("every spec refused: {}", fmt::join(refusals, " | "));
        return network != nullptr;
      })) {
    return;
  }
  check("every accepted spec gives [batch, classes] logits", [&](std::string& why) {
    torch::NoGradGuard no_grad;
    for (const DatasetSpec& candidate : accepted) {
      auto built = topology.build(candidate);
      built->eval();
      const at::Tensor out = built->apply(sample_inputs(candidate, 1));
      if (out.sizes() != c10::IntArrayRef{1, candidate.output_size()}) {
        why = fmt::format("input [1, {}] gave {}", fmt::join(candidate.input_shape, ", "), shape_of(out.sizes()));
        return false;
      }
    }
    return true;
  });
  check("refusals of other specs are ConfigErrors with a message", [&](std::string& why) {
    why = "an empty refusal message";
    return std::all_of(refusals.begin(), refusals.end(), [](const std::string& r) { return !r.empty(); });
  });
  check("has quantisable layers", [&](std::string& why) {
    why = "no ql::nn::Linear/Conv2d/Activation: algorithms could not act on it";
    return !network->quantizable_layers().empty();
  });
  at::Tensor output;
  check("forward gives [batch, classes] logits", [&](std::string& why) {
    network->train();
    output = network->apply(sample_inputs(spec, 2));
    why = fmt::format("output {} for {} outputs", shape_of(output.sizes()), spec.output_size());
    return output.dim() == 2 && output.size(0) == 2 && output.size(1) == spec.output_size() &&
           torch::isfinite(output).all().item<bool>();
  });
  check("backward reaches every trainable parameter", [&](std::string& why) {
    if (!output.defined()) return false;
    output.sum().backward();
    for (const auto& p : network->named_parameters()) {
      if (p.value().requires_grad() && !p.value().grad().defined()) {
        why = "no gradient for " + p.key();
        return false;
      }
    }
    return true;
  });
  check("the same seed gives the same initial weights", [&](std::string& why) {
    torch::manual_seed(1234);
    auto first = topology.build(spec);
    torch::manual_seed(1234);
    auto second = topology.build(spec);
    const auto a = first->named_parameters(), b = second->named_parameters();
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (!a[i].value().equal(b[i].value())) {
        why = "parameter " + a[i].key() + " differs";
        return false;
      }
    }
    return a.size() == b.size();
  });
  check("every Linear and Conv2d is a quantisable SDK layer", [&](std::string& why) {
    for (const auto& item : network->named_modules("", false)) {
      const std::string type = item.value()->name();
      if (type == "torch::nn::LinearImpl" || type == "torch::nn::Conv2dImpl") {
        why = item.key() + " is a plain " + type;
        return false;
      }
    }
    return true;
  });
  check("two builds have independent parameters", [&](std::string& why) {
    auto other = topology.build(spec);
    why = "parameters are shared between networks";
    const auto a = network->parameters(), b = other->parameters();
    return a.size() == b.size() && (a.empty() || a[0].data_ptr() != b[0].data_ptr());
  });
}

// A two-layer network of SDK layers and a matching data set, for the algorithm checks.
class ProbeNetwork : public Network {
 public:
  ProbeNetwork() {
    fc1_ = register_module("fc1", std::make_shared<nn::Linear>(nn::LinearOptions(16, 12)));
    act1_ = register_module("act1", std::make_shared<nn::Activation>("relu"));
    fc2_ = register_module("fc2", std::make_shared<nn::Linear>(nn::LinearOptions(12, 3)));
  }
  at::Tensor forward(const at::Tensor& x) override { return fc2_->forward(act1_->forward(fc1_->forward(x.flatten(1)))); }

 private:
  std::shared_ptr<nn::Linear> fc1_, fc2_;
  std::shared_ptr<nn::Activation> act1_;
};

class ProbeDataset : public Dataset {
 public:
  ProbeDataset() : inputs_(torch::randn({64, 1, 4, 4})), targets_(torch::arange(64, torch::kInt64) % 3) {}
  std::int64_t size() const override { return 64; }
  Batch get_batch(const at::Tensor& indices, std::uint64_t, bool) const override {
    return {inputs_.index_select(0, indices), targets_.index_select(0, indices)};
  }

 private:
  at::Tensor inputs_, targets_;
};

// The context of a probe run: artefacts go to a private temporary folder, removed afterwards.
class ProbeContext : public Context {
 public:
  ProbeContext(Config options, std::shared_ptr<const Dataset> data, std::uint64_t seed = 1)
      : options_(std::move(options)), data_(std::move(data)), seed_(seed), dir_("quantlab-check-") {
    spec_.input_shape = {1, 4, 4};
    spec_.num_classes = 3;
  }
  const Config& options() const override { return options_; }
  const DatasetSpec& spec() const override { return spec_; }
  c10::Device device() const override { return c10::kCPU; }
  std::uint64_t seed() const override { return seed_; }
  const std::filesystem::path& artifacts_dir() const override { return dir_.path(); }
  void write_table(std::string_view name, const Table& table) override {
    run::write_artifact_table(dir_.path(), name, table);
  }
  void write_file(std::string_view name,
                  const std::function<void(const std::filesystem::path& temporary)>& write) override {
    run::write_artifact_file(dir_.path(), name, write);
  }
  void log(LogLevel, std::string_view) override {}
  void scalar(std::string_view, double, std::int64_t) override {}
  void histogram(std::string_view, const at::Tensor&, std::int64_t) override {}
  void progress(std::string_view, std::int64_t, std::int64_t) override {}
  Evaluation evaluate(Network& network, Split) override {
    BatchLoader loader(data_, sequential_order(data_->size()), 16, 0, false, 0);
    return core::evaluate(network, loader, c10::kCPU, false);
  }

 private:
  Config options_;
  std::shared_ptr<const Dataset> data_;
  std::uint64_t seed_;
  DatasetSpec spec_;
  run::ScratchFolder dir_;
};

class ProbeCalibration : public Calibration {
 public:
  explicit ProbeCalibration(std::shared_ptr<const Dataset> data) : data_(std::move(data)) {}
  std::int64_t size() const override { return data_->size(); }
  void for_each_batch(std::int64_t max_samples, const std::function<void(const Batch&)>& visit) override {
    const std::int64_t n = std::min(max_samples, data_->size());
    for (std::int64_t begin = 0; begin < n; begin += 16) {
      visit(data_->get_batch(torch::arange(begin, std::min(begin + 16, n), torch::kInt64), 0, false));
    }
  }

 private:
  std::shared_ptr<const Dataset> data_;
};

// Name, shape, dtype and device of every parameter and buffer of a network.
struct TensorLayout {
  std::string name;
  std::vector<std::int64_t> sizes;
  c10::ScalarType dtype;
  c10::Device device;
};

std::vector<TensorLayout> layout_of(Network& network) {
  std::vector<TensorLayout> layout;
  auto add = [&](const std::string& name, const at::Tensor& t) {
    layout.push_back({name, t.sizes().vec(), t.scalar_type(), t.device()});
  };
  for (const auto& p : network.named_parameters()) add(p.key(), p.value());
  for (const auto& b : network.named_buffers()) add(b.key(), b.value());
  return layout;
}

// The first tensor of `before` that is gone or changed its shape, dtype or device ("" if none).
std::string layout_change(const std::vector<TensorLayout>& before, Network& network) {
  const std::vector<TensorLayout> now = layout_of(network);
  for (const TensorLayout& old : before) {
    auto found = std::find_if(now.begin(), now.end(), [&](const TensorLayout& t) { return t.name == old.name; });
    if (found == now.end()) return old.name + " disappeared";
    if (found->sizes != old.sizes || found->dtype != old.dtype || found->device != old.device) {
      return fmt::format("{} went from {} {} on {} to {} {} on {}", old.name, shape_of(old.sizes), c10::toString(old.dtype),
                         old.device.str(), shape_of(found->sizes), c10::toString(found->dtype), found->device.str());
    }
  }
  return "";
}

std::string state_bytes(const Algorithm& algorithm) {
  torch::serialize::OutputArchive archive;
  algorithm.save_state(archive);
  std::ostringstream bytes;
  archive.save_to(bytes);
  return bytes.str();
}

void load_state_bytes(Algorithm& algorithm, const std::string& bytes) {
  torch::serialize::InputArchive archive;
  load_archive(archive, bytes);
  algorithm.load_state(archive);
}

// Copies every parameter and buffer of `from` into `to` (same architecture).
void copy_tensors(Network& from, Network& to) {
  torch::NoGradGuard no_grad;
  const auto source = from.named_parameters(), target = to.named_parameters();
  for (const auto& p : source) target[p.key()].copy_(p.value());
  const auto source_buffers = from.named_buffers(), target_buffers = to.named_buffers();
  for (const auto& b : source_buffers) target_buffers[b.key()].copy_(b.value());
}

// An algorithm plugin's objects, made afresh from the same options for the checks that
// compare two of them.
using AlgorithmFactory = std::function<PluginPtr<Algorithm>()>;

// A second object of the plugin, attached to a network of its own in a context of `seed`.
struct SecondObject {
  SecondObject(const AlgorithmFactory& make, const Config& options, std::shared_ptr<ProbeDataset> data,
               std::uint64_t seed = 1)
      : ctx(options, std::move(data), seed), algorithm(make()) {
    algorithm->attach(network, ctx);
  }
  ProbeNetwork network;
  ProbeContext ctx;
  PluginPtr<Algorithm> algorithm;
};

// The state round trip, on a second object: the bytes it saves after loading are the bytes
// loaded, and the network it drives computes what the first one's does (eval mode).
void check_state(Checker& check, Algorithm& algorithm, ProbeNetwork& network, const AlgorithmFactory& make,
                 const Config& options, const std::shared_ptr<ProbeDataset>& data, const at::Tensor& probe) {
  std::string saved;
  if (!check("state saves and loads back the same bytes", [&](std::string& why) {
        saved = state_bytes(algorithm);
        SecondObject other(make, options, data);
        load_state_bytes(*other.algorithm, saved);
        why = "save_state after load_state wrote other bytes than were loaded";
        return state_bytes(*other.algorithm) == saved;
      })) {
    return;
  }
  check("loaded state gives the same network behaviour", [&](std::string& why) {
    SecondObject other(make, options, data);
    copy_tensors(network, other.network);
    load_state_bytes(*other.algorithm, saved);
    torch::NoGradGuard no_grad;
    network.eval();
    other.network.eval();
    const at::Tensor expected = network.apply(probe), got = other.network.apply(probe);
    network.train();
    why = fmt::format("outputs differ by up to {:.3g}", (expected - got).abs().max().item<double>());
    return expected.equal(got);
  });
}

// A codec's decode(encode(g)) is g on average (stochastic rounding): over R draws, the
// statistic sum_i (mean_i - g_i)^2 / (s_i^2 / R) is chi-squared with d degrees of freedom for
// an unbiased codec, and must stay below d + 6 sqrt(2 d). A coordinate that never moved in R
// draws rounds the other way with a probability p below about 3/R (the rule of three), so its
// error p x gap stays below 8/R times the largest decoded magnitude (which bounds the gap).
// Encodings are a function of the seed.
void check_codec(Checker& check, Algorithm& algorithm, ProbeNetwork& network, const AlgorithmFactory& make,
                 const Config& options, const std::shared_ptr<ProbeDataset>& data) {
  std::shared_ptr<GradientCodec> codec;
  check("gradient_codec answers", [&](std::string&) {
    codec = algorithm.gradient_codec();
    return true;
  });
  if (!codec) return;
  // Magnitudes of 1/4 to 1 with random signs: no coordinate so small against its bucket that
  // rounding up is too rare to be seen in a few hundred draws.
  torch::manual_seed(5);
  const std::int64_t d = std::min<std::int64_t>(512, network.parameters()[0].numel());
  const at::Tensor g = torch::empty({d}).uniform_(0.25, 1.0) * (torch::randint(0, 2, {d}) * 2 - 1);
  auto encode = [&](GradientCodec& c) {
    if (c.wants_gradients()) c.observe(g);
    return c.encode(g);
  };
  check("decode(encode(g)) has g's size and is finite", [&](std::string& why) {
    const at::Tensor decoded = codec->decode(encode(*codec), d);
    why = fmt::format("decoded {} {}", shape_of(decoded.sizes()), c10::toString(decoded.scalar_type()));
    return decoded.sizes() == c10::IntArrayRef{d} && decoded.scalar_type() == torch::kFloat32 &&
           torch::isfinite(decoded).all().item<bool>();
  });
  bool random = false;  // whether encodings vary from draw to draw
  check("decode(encode(g)) is unbiased", [&](std::string& why) {
    const std::int64_t draws = 400;
    std::vector<at::Tensor> samples;
    for (std::int64_t r = 0; r < draws; ++r) samples.push_back(codec->decode(encode(*codec), d).to(torch::kFloat64));
    const at::Tensor all = torch::stack(samples), g64 = g.to(torch::kFloat64);
    const at::Tensor mean = all.mean(0), variance = all.var(0);
    const double scale = g64.abs().max().item<double>();
    const at::Tensor fixed = variance <= 1e-12 * scale * scale;  // (float rounding aside: never moved)
    const double fixed_error = fixed.any().item<bool>() ? ((mean - g64).abs() * fixed).max().item<double>() : 0.0;
    const at::Tensor free = fixed.logical_not();
    const double statistic =
        ((mean - g64).square() / (variance / draws).clamp_min(1e-300) * free).sum().item<double>();
    const double dof = free.sum().item<double>(), bound = dof + 6 * std::sqrt(2 * dof);
    random = dof > 0;
    why = fmt::format("chi-squared {:.1f} over {} draws for {} varying coordinates (bound {:.1f}); "
                      "largest error of a fixed coordinate {:.3g}",
                      statistic, draws, dof, bound, fixed_error);
    return statistic <= bound && fixed_error <= 8.0 / draws * all.abs().max().item<double>();
  });
  check("encodings are a function of the seed", [&](std::string& why) {
    auto encodings = [&](std::uint64_t seed) {
      SecondObject other(make, options, data, seed);
      auto c = other.algorithm->gradient_codec();
      std::vector<std::vector<std::uint8_t>> out;
      for (int i = 0; c && i < 3; ++i) out.push_back(encode(*c));
      return out;
    };
    // A codec that rounds at random must draw from the run's seed; a deterministic one
    // (full precision) only has to repeat itself.
    const auto first = encodings(1), again = encodings(1), other = encodings(2);
    why = first != again ? "two codecs of the same seed encode differently" : "seeds 1 and 2 encode alike";
    return first == again && (!random || first != other);
  });
}

void check_algorithm(Checker& check, Algorithm& algorithm, const Config& options, const AlgorithmFactory& make) {
  torch::manual_seed(0);
  auto data = std::make_shared<ProbeDataset>();
  ProbeNetwork network;
  ProbeContext ctx(options, data);
  ProbeCalibration calibration(data);
  const std::vector<TensorLayout> layout = layout_of(network);
  const at::Tensor probe = data->get_batch(torch::arange(8, torch::kInt64), 0, false).inputs;
  auto working = [&](std::string& why) {
    if (const std::string change = layout_change(layout, network); !change.empty()) {
      why = change;
      return false;
    }
    const at::Tensor out = network.apply(probe);
    why = fmt::format("output {} {} (finite: {})", shape_of(out.sizes()), c10::toString(out.scalar_type()),
                      torch::isfinite(out).all().item<bool>());
    return out.sizes() == c10::IntArrayRef{8, 3} && out.scalar_type() == torch::kFloat32 &&
           torch::isfinite(out).all().item<bool>();
  };
  check("attach keeps every tensor's shape, dtype and device; forward and backward work", [&](std::string& why) {
    algorithm.attach(network, ctx);
    if (!working(why)) return false;
    network.apply(probe).sum().backward();
    return true;
  });
  check("epoch and step hooks keep a working network", [&](std::string& why) {
    for (std::int64_t epoch = 0; epoch < 2; ++epoch) {
      algorithm.on_epoch_begin(epoch, ctx);
      if (!working(why)) return false;
      network.zero_grad();
      network.apply(probe).sum().backward();
      algorithm.on_step_end(epoch + 1, ctx);
      if (!working(why)) return false;
    }
    return true;
  });
  check_state(check, algorithm, network, make, options, data, probe);
  check_codec(check, algorithm, network, make, options, data);
  check("every variant has a label and the same columns", [&](std::string& why) {
    const auto variants = algorithm.variants();
    for (const Variant& v : variants) {
      if (v.label.empty() || v.values.size() != variants.front().values.size()) {
        why = "variant '" + v.label + "' differs from the first";
        return false;
      }
    }
    return true;
  });
  check("applying variants leaves a working network", [&](std::string& why) {
    const auto variants = algorithm.variants();
    for (std::size_t i = 0; i < variants.size() && i < 3; ++i) {
      algorithm.apply_variant(variants[i], network, calibration, ctx);
      if (!working(why)) return false;
    }
    return true;
  });
  check("post_training leaves a working network", [&](std::string& why) {
    algorithm.post_training(network, calibration, ctx);
    return working(why);
  });
}

// Creates the plugin's object from `options` (itself a check), then runs `checks` on it.
template <typename Interface, typename Checks>
void create_then_check(Checker& check, PluginRegistry& registry, const PluginMetadata& plugin,
                       const Config& options, Checks&& checks) {
  PluginPtr<Interface> object;
  if (check("is created from its defaults", [&](std::string&) {
        object = registry.create<Interface>(plugin.name, options);
        return object != nullptr;
      })) {
    checks(*object);
  }
}

}  // namespace

ConformanceReport check_conformance(PluginRegistry& registry, const PluginMetadata& plugin,
                                    const std::vector<std::string>& overrides) {
  ConformanceReport report;
  Checker check(report);
  Config options{nullptr};
  if (!check("default options parse and validate", [&](std::string&) {
        options = plugin_options(plugin, overrides);
        return true;
      })) {
    return report;
  }
  switch (plugin.kind) {
    case PluginKind::problem:
      create_then_check<Problem>(check, registry, plugin, options, [&](Problem& p) { check_problem(check, p); });
      break;
    case PluginKind::topology:
      create_then_check<Topology>(check, registry, plugin, options, [&](Topology& t) { check_topology(check, t); });
      break;
    case PluginKind::algorithm:
      create_then_check<Algorithm>(check, registry, plugin, options, [&](Algorithm& a) {
        check_algorithm(check, a, options, [&] { return registry.create<Algorithm>(plugin.name, options); });
      });
      break;
  }
  return report;
}

}  // namespace ql::core
