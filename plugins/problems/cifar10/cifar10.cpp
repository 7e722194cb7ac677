// CIFAR-10 and CIFAR-100 in their official binary versions: records of label byte(s) and
// 3072 pixel bytes (1024 red, 1024 green, 1024 blue, row-major 32x32). Training batches are
// augmented as the reference experiments do (random 32x32 crop of the image padded by 4
// pixels, horizontal flip), seeded per batch; then normalised per channel.
#include "quantlab/sdk/config.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/plugin.hpp"
#include "quantlab/sdk/problem.hpp"

#include <torch/types.h>

#include <filesystem>
#include <fstream>
#include <random>

namespace {

namespace fs = std::filesystem;

constexpr char kOptions[] = R"toml(
data_dir = ""             # folder of the binary files (relative: to [storage] data): cifar-10-batches-bin (data_batch_1.bin ... data_batch_5.bin, test_batch.bin) or cifar-100-binary (train.bin, test.bin)
variant = "cifar10"       # cifar10 | cifar100 (fine labels)
augment = true            # training batches: random crop 32 from the image padded by 4, horizontal flip
normalization = "standard"  # standard: per-channel mean and std of the training set (the usual constants) | unit: [0, 1]
max_train_samples = 0     # use only the first N training images (0: all)
)toml";

constexpr std::int64_t kPixels = 3 * 32 * 32;

const std::vector<std::string> kCifar10Names{"airplane", "automobile", "bird", "cat", "deer",
                                             "dog", "frog", "horse", "ship", "truck"};

struct Images {
  at::Tensor pixels;  // uint8 [N, 3, 32, 32]
  at::Tensor labels;  // int64 [N]
};

// Reads whole records of `label_bytes` + 3072 bytes; the label used is the last label byte
// (CIFAR-100: coarse, then fine).
Images read_records(const std::vector<fs::path>& files, std::int64_t label_bytes, std::int64_t classes) {
  const std::int64_t record = label_bytes + kPixels;
  std::vector<std::uint8_t> pixels;
  std::vector<std::int64_t> labels;
  for (const fs::path& file : files) {
    std::ifstream in(file, std::ios::binary);
    QL_CHECK(in.good(), "{}: cannot open (does the file exist? set problem.data_dir)", file.string());
    std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto size = static_cast<std::int64_t>(bytes.size());
    QL_CHECK(size > 0 && size % record == 0,
             "{}: {} bytes is not a whole number of {}-byte records (truncated or not a CIFAR binary file?)",
             file.string(), size, record);
    for (std::int64_t at = 0; at < size; at += record) {
      const std::int64_t label = bytes[static_cast<std::size_t>(at + label_bytes - 1)];
      QL_CHECK(label < classes, "{}: record {} has label {}, expected below {}", file.string(), at / record, label,
               classes);
      labels.push_back(label);
      pixels.insert(pixels.end(), bytes.begin() + at + label_bytes, bytes.begin() + at + record);
    }
  }
  const auto n = static_cast<std::int64_t>(labels.size());
  return {torch::from_blob(pixels.data(), {n, 3, 32, 32}, torch::kUInt8).clone(), torch::tensor(labels, torch::kInt64)};
}

class CifarSet : public ql::Dataset {
 public:
  CifarSet(Images images, bool augment, at::Tensor mean, at::Tensor std)
      : images_(std::move(images)), augment_(augment), mean_(std::move(mean)), std_(std::move(std)) {}

  std::int64_t size() const override { return images_.pixels.size(0); }

  ql::Batch get_batch(const at::Tensor& indices, std::uint64_t seed, bool augment) const override {
    at::Tensor pixels = images_.pixels.index_select(0, indices);
    if (augment && augment_) pixels = crop_and_flip(pixels, seed);
    ql::Batch batch;
    batch.inputs = pixels.to(torch::kFloat32).div_(255.0).sub_(mean_).div_(std_);
    batch.targets = images_.labels.index_select(0, indices);
    return batch;
  }

  std::optional<ql::InputEncoding> input_encoding() const override {
    using Operation = ql::InputStep::Operation;
    const auto values = [](const at::Tensor& t) {
      const at::Tensor flat = t.to(torch::kFloat32).flatten().contiguous();
      return std::vector<float>(flat.data_ptr<float>(), flat.data_ptr<float>() + flat.numel());
    };
    return ql::InputEncoding{{{Operation::divide, {255.0f}},
                              {Operation::subtract, values(mean_)},
                              {Operation::divide, values(std_)}}};
  }

 private:
  // Each image: zero-pad by 4, take the 32x32 window at a random offset in [0, 8]^2, flip it
  // left-right with probability 1/2. Offsets and flips come from the batch's seed.
  static at::Tensor crop_and_flip(const at::Tensor& pixels, std::uint64_t seed) {
    const std::int64_t n = pixels.size(0);
    const at::Tensor padded = torch::constant_pad_nd(pixels, {4, 4, 4, 4}, 0);
    at::Tensor out = torch::empty_like(pixels);
    std::mt19937_64 engine(seed);
    for (std::int64_t i = 0; i < n; ++i) {
      const auto dy = static_cast<std::int64_t>(engine() % 9), dx = static_cast<std::int64_t>(engine() % 9);
      const bool flip = (engine() & 1) != 0;
      at::Tensor window = padded[i].slice(1, dy, dy + 32).slice(2, dx, dx + 32);
      out[i].copy_(flip ? window.flip({2}) : window);
    }
    return out;
  }

  Images images_;
  bool augment_;
  at::Tensor mean_, std_;
};

class Cifar : public ql::Problem {
 public:
  explicit Cifar(const ql::Config& options)
      : dir_(options.get_path("data_dir")),
        cifar100_(options.get_choice("variant", {"cifar10", "cifar100"}) == "cifar100"),
        augment_(options.get_bool("augment")),
        standard_(options.get_choice("normalization", {"standard", "unit"}) == "standard"),
        max_train_(options.get_int("max_train_samples", 0, INT64_MAX)) {
    spec_.input_kind = ql::InputKind::image;
    spec_.input_shape = {3, 32, 32};
    spec_.num_classes = cifar100_ ? 100 : 10;
    if (cifar100_) {
      for (int c = 0; c < 100; ++c) spec_.class_names.push_back(std::to_string(c));
    } else {
      spec_.class_names = kCifar10Names;
    }
  }

  ql::DatasetSpec spec() const override { return spec_; }

  std::shared_ptr<const ql::Dataset> dataset(ql::Split split, ql::Log& /*log*/) override {
    if (!splits_.train) load();
    return splits_.of(split);
  }

 private:
  void load() {
    QL_CHECK(!dir_.empty(), "problem cifar10: set problem.data_dir to the folder of the binary files ({})",
             cifar100_ ? "cifar-100-binary" : "cifar-10-batches-bin");
    std::vector<fs::path> train_files;
    fs::path test_file;
    if (cifar100_) {
      train_files = {dir_ / "train.bin"};
      test_file = dir_ / "test.bin";
    } else {
      for (int i = 1; i <= 5; ++i) train_files.push_back(dir_ / fmt::format("data_batch_{}.bin", i));
      test_file = dir_ / "test_batch.bin";
    }
    const std::int64_t label_bytes = cifar100_ ? 2 : 1;
    Images train = read_records(train_files, label_bytes, spec_.num_classes);
    Images test = read_records({test_file}, label_bytes, spec_.num_classes);
    if (max_train_ > 0 && max_train_ < train.pixels.size(0)) {
      train = {train.pixels.slice(0, 0, max_train_), train.labels.slice(0, 0, max_train_)};
    }

    // The usual per-channel statistics of the training sets.
    at::Tensor mean = torch::zeros({3, 1, 1}), std = torch::ones({3, 1, 1});
    if (standard_) {
      mean = cifar100_ ? torch::tensor({0.5071, 0.4865, 0.4409}) : torch::tensor({0.4914, 0.4822, 0.4465});
      std = cifar100_ ? torch::tensor({0.2673, 0.2564, 0.2762}) : torch::tensor({0.2470, 0.2435, 0.2616});
      mean = mean.to(torch::kFloat32).view({3, 1, 1});
      std = std.to(torch::kFloat32).view({3, 1, 1});
    }

    // The validation split is the host's to hold out (evaluation batches are never augmented).
    splits_.train = std::make_shared<CifarSet>(std::move(train), augment_, mean, std);
    splits_.test = std::make_shared<CifarSet>(std::move(test), false, mean, std);
  }

  fs::path dir_;
  bool cifar100_;
  bool augment_, standard_;
  std::int64_t max_train_;
  ql::DatasetSpec spec_;
  ql::Splits splits_;
};

}  // namespace

QL_PLUGIN(problem, "cifar10", "0.1.0", "CIFAR-10 / CIFAR-100 binary version, with crop and flip augmentation", kOptions,
          Cifar)
