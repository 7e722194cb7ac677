// The MNIST problem: 28x28 grey images in MNIST's IDX files (MNIST, Fashion-MNIST, KMNIST and
// any other set in that format, any sample counts). Loaded once into memory as bytes; batches
// are gathered with one index_select and normalised on the loader thread.
#include "idx_file.hpp"

#include "quantlab/sdk/config.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/plugin.hpp"
#include "quantlab/sdk/problem.hpp"

#include <torch/types.h>

#include <filesystem>

namespace {

namespace fs = std::filesystem;

constexpr char kOptions[] = R"toml(
data_dir = "/usr/share/datasets/fashion-mnist"  # folder of the IDX files (Debian's dataset-fashion-mnist; relative: to [storage] data)
train_images = "train-images-idx3-ubyte"        # file names in data_dir; "NAME.gz" is tried when NAME is absent
train_labels = "train-labels-idx1-ubyte"
test_images = "t10k-images-idx3-ubyte"
test_labels = "t10k-labels-idx1-ubyte"
normalization = "standard"    # standard: (x - mean) / std of the training file's pixels | unit: x in [0, 1] | symmetric: x in [-1, 1]
image_size = [28, 28]         # rows and columns of the images (checked against the files)
classes = 10                  # number of classes (every label must be below it)
class_names = []              # names of the classes, e.g. ["T-shirt/top", "Trouser", ...]; empty: "0", "1", ...
max_train_samples = 0         # use only the first N training images (0: all), for quick runs
max_test_samples = 0          # use only the first N test images (0: all)
)toml";

// Images as bytes [N, 1, H, W] and labels int64 [N]; normalisation on the fly.
class ImageSet : public ql::Dataset {
 public:
  ImageSet(at::Tensor images, at::Tensor labels, double offset, double scale)
      : images_(std::move(images)), labels_(std::move(labels)), offset_(offset), scale_(scale) {}
  std::int64_t size() const override { return images_.size(0); }
  ql::Batch get_batch(const at::Tensor& indices, std::uint64_t /*seed*/, bool /*augment*/) const override {
    ql::Batch batch;
    batch.inputs = images_.index_select(0, indices).to(torch::kFloat32).sub_(offset_).mul_(scale_);
    batch.targets = labels_.index_select(0, indices);
    return batch;
  }
  std::optional<ql::InputEncoding> input_encoding() const override {
    using Operation = ql::InputStep::Operation;
    return ql::InputEncoding{{{Operation::subtract, {static_cast<float>(offset_)}},
                              {Operation::multiply, {static_cast<float>(scale_)}}}};
  }

 private:
  at::Tensor images_;
  at::Tensor labels_;
  double offset_;  // in byte units
  double scale_;
};

fs::path locate(const fs::path& dir, const std::string& name) {
  const fs::path plain = dir / name;
  if (fs::exists(plain)) return plain;
  fs::path gz = plain;
  gz += ".gz";
  if (fs::exists(gz)) return gz;
  throw ql::Error(fmt::format("{}: not found (nor {}.gz); set problem.data_dir to the folder of the "
                              "IDX files",
                              plain.string(), plain.filename().string()));
}

struct Loaded {
  at::Tensor images;  // uint8 [N, 1, H, W]
  at::Tensor labels;  // int64 [N]
};

Loaded load_pair(const fs::path& images_path, const fs::path& labels_path, std::int64_t limit) {
  ql::mnist::IdxArray images = ql::mnist::read_idx(images_path);
  ql::mnist::IdxArray labels = ql::mnist::read_idx(labels_path);
  QL_CHECK(images.dims.size() == 3, "{}: expected images (3 dimensions: count, rows, columns), found {} "
           "dimensions", images_path.string(), images.dims.size());
  QL_CHECK(labels.dims.size() == 1, "{}: expected labels (1 dimension), found {} dimensions",
           labels_path.string(), labels.dims.size());
  QL_CHECK(images.dims[0] == labels.dims[0], "{} has {} images but {} has {} labels", images_path.string(),
           images.dims[0], labels_path.string(), labels.dims[0]);
  const std::int64_t n = limit > 0 ? std::min(limit, images.dims[0]) : images.dims[0];
  const std::int64_t h = images.dims[1], w = images.dims[2];
  Loaded out;
  out.images = torch::from_blob(images.data.data(), {images.dims[0], 1, h, w}, torch::kUInt8)
                   .slice(0, 0, n).clone();
  out.labels = torch::from_blob(labels.data.data(), {labels.dims[0]}, torch::kUInt8)
                   .slice(0, 0, n).to(torch::kInt64);
  return out;
}

enum class Normalization { standard, unit, symmetric };

// The spec comes from the options alone; the files are read on the first dataset() call, so
// `qlhost summary` and plugin listings need no data.
class Mnist : public ql::Problem {
 public:
  explicit Mnist(const ql::Config& options)
      : dir_(options.get_path("data_dir")),
        normalization_(options.get_enum<Normalization>("normalization", {{"standard", Normalization::standard},
                                                          {"unit", Normalization::unit},
                                                          {"symmetric", Normalization::symmetric}})),
        max_train_(options.get_int("max_train_samples", 0, INT64_MAX)),
        max_test_(options.get_int("max_test_samples", 0, INT64_MAX)) {
    for (const char* key : {"train_images", "train_labels", "test_images", "test_labels"}) {
      files_.push_back(options.get_string(key));
    }
    const std::vector<std::int64_t> size = options.get_int_list("image_size");
    if (size.size() != 2 || size[0] < 1 || size[1] < 1) {
      throw ql::ConfigError(options.error_message("image_size", "expected [rows, columns], both positive"));
    }
    spec_.input_kind = ql::InputKind::image;
    spec_.input_shape = {1, size[0], size[1]};
    spec_.num_classes = options.get_int("classes", 2, 1 << 16);
    spec_.class_names = options.get_string_list("class_names");
    if (spec_.class_names.empty()) {
      for (std::int64_t c = 0; c < spec_.num_classes; ++c) spec_.class_names.push_back(std::to_string(c));
    }
    if (static_cast<std::int64_t>(spec_.class_names.size()) != spec_.num_classes) {
      throw ql::ConfigError(options.error_message(
          "class_names", fmt::format("{} names given for {} classes", spec_.class_names.size(), spec_.num_classes)));
    }
  }

  ql::DatasetSpec spec() const override { return spec_; }

  std::shared_ptr<const ql::Dataset> dataset(ql::Split split, ql::Log& /*log*/) override {
    if (!splits_.train) load();
    return splits_.of(split);
  }

 private:
  void check_against_spec(const Loaded& set, const fs::path& images, const fs::path& labels) const {
    QL_CHECK(set.images.size(2) == spec_.input_shape[1] && set.images.size(3) == spec_.input_shape[2],
             "{}: images of {}x{}, but image_size = [{}, {}]", images.string(), set.images.size(2),
             set.images.size(3), spec_.input_shape[1], spec_.input_shape[2]);
    if (set.labels.numel() == 0) return;
    const std::int64_t largest = set.labels.max().item<std::int64_t>();
    QL_CHECK(largest < spec_.num_classes, "{}: label {} is not below classes = {}", labels.string(), largest,
             spec_.num_classes);
  }

  void load() {
    std::vector<fs::path> paths;
    for (const std::string& name : files_) paths.push_back(locate(dir_, name));
    Loaded train = load_pair(paths[0], paths[1], max_train_);
    Loaded test = load_pair(paths[2], paths[3], max_test_);
    QL_CHECK(train.images.size(0) > 0, "{}: no training images", paths[0].string());
    check_against_spec(train, paths[0], paths[1]);
    check_against_spec(test, paths[2], paths[3]);

    // The validation split is the host's to hold out; the statistics are the training file's.
    double offset = 0.0, scale = 1.0 / 255.0;
    if (normalization_ == Normalization::standard) {
      const at::Tensor pixels = train.images.to(torch::kFloat64);
      offset = pixels.mean().item<double>();
      const double std = pixels.std().item<double>();
      scale = std > 0 ? 1.0 / std : 1.0;
    } else if (normalization_ == Normalization::symmetric) {
      offset = 127.5;
      scale = 1.0 / 127.5;
    }
    splits_.train = std::make_shared<ImageSet>(train.images, train.labels, offset, scale);
    if (test.images.size(0) > 0) splits_.test = std::make_shared<ImageSet>(test.images, test.labels, offset, scale);
  }

  fs::path dir_;
  Normalization normalization_;
  std::int64_t max_train_, max_test_;
  std::vector<std::string> files_;
  ql::DatasetSpec spec_;
  ql::Splits splits_;
};

}  // namespace

QL_PLUGIN(problem, "mnist", "0.1.0", "MNIST-format IDX image classification (default: Fashion-MNIST)",
          kOptions, Mnist)
