// A regression problem: a seeded random linear map y = x·T from R^n to R^m (Quantifind's
// "simple dense" task), learned with the mean squared error. Inputs x ~ N(0, I_n) and the map's
// entries T_ij ~ N(0, 1) come from LibTorch's CPU generator under fixed seeds, so the data are
// the same on every run and machine with the same LibTorch; `noise` adds N(0, noise²) to every
// target, a floor under the loss that a perfect fit cannot go below.
#include "quantlab/sdk/config.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/plugin.hpp"
#include "quantlab/sdk/problem.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/types.h>

namespace {

constexpr char kOptions[] = R"toml(
inputs = 256               # n: the length of each input vector
outputs = 256              # m: the length of each target vector
train_samples = 43200      # samples of the training split (the host holds [training] valid_fraction of them out for validation)
test_samples = 4800        # samples of the test split
map_seed = 42              # seed of the map T (entries N(0, 1)); the inputs use seeds map_seed + 1 (train) and + 2 (test)
noise = 0.0                # standard deviation of Gaussian noise added to each target (0: y = x·T exactly)
)toml";

class VectorSet : public ql::Dataset {
 public:
  VectorSet(at::Tensor inputs, at::Tensor targets) : inputs_(std::move(inputs)), targets_(std::move(targets)) {}
  std::int64_t size() const override { return inputs_.size(0); }
  ql::Batch get_batch(const at::Tensor& indices, std::uint64_t /*seed*/, bool /*augment*/) const override {
    return {inputs_.index_select(0, indices), targets_.index_select(0, indices)};
  }

 private:
  at::Tensor inputs_, targets_;
};

class LinearMap : public ql::Problem {
 public:
  explicit LinearMap(const ql::Config& options)
      : inputs_(options.get_int("inputs", 1, 1 << 16)),
        outputs_(options.get_int("outputs", 1, 1 << 16)),
        train_samples_(options.get_int("train_samples", 1, 1 << 26)),
        test_samples_(options.get_int("test_samples", 1, 1 << 26)),
        seed_(static_cast<std::uint64_t>(options.get_int("map_seed", 0, INT64_MAX - 2))),
        noise_(options.get_double("noise", 0.0, 1e6)) {
    QL_CHECK((train_samples_ + test_samples_) * (inputs_ + outputs_) <= (std::int64_t{1} << 30),
             "problem linear_map: {} samples of {} + {} values need more than 4 GiB", train_samples_ + test_samples_,
             inputs_, outputs_);
  }

  ql::DatasetSpec spec() const override {
    ql::DatasetSpec spec;
    spec.task = ql::Task::regression;
    spec.input_shape = {inputs_};
    spec.target_size = outputs_;
    return spec;
  }

  std::shared_ptr<const ql::Dataset> dataset(ql::Split split, ql::Log& /*log*/) override {
    if (split == ql::Split::valid) return nullptr;
    if (!map_.defined()) map_ = at::randn({inputs_, outputs_}, at::detail::createCPUGenerator(seed_));
    const bool train = split == ql::Split::train;
    at::Generator generator = at::detail::createCPUGenerator(seed_ + (train ? 1 : 2));
    const at::Tensor x = at::randn({train ? train_samples_ : test_samples_, inputs_}, generator);
    at::Tensor y = x.matmul(map_);
    if (noise_ > 0) y += noise_ * at::randn(y.sizes(), generator);
    return std::make_shared<VectorSet>(x, y);
  }

 private:
  std::int64_t inputs_, outputs_, train_samples_, test_samples_;
  std::uint64_t seed_;
  double noise_;
  at::Tensor map_;
};

}  // namespace

QL_PLUGIN(problem, "linear_map", "0.1.0", "regression: learn a seeded random linear map R^n -> R^m (mean squared error)",
          kOptions, LinearMap)
