// ILSVRC-2012 (ImageNet) as users have it on disk: train/<wnid>/*.JPEG and val/<wnid>/*.JPEG
// (ImageFolder layout), or a flat val/ with a label file. Images are decoded with libjpeg-turbo
// on worker threads, scaled in the DCT to just above the size the crop needs and only the rows
// and blocks the crop covers, then resized (antialiased bilinear), flipped and normalised in
// one pass: train: random-resized-crop + flip, as torchvision; eval: resize 256 + centre crop 224.
#include "jpeg_decoder.hpp"
#include "resample.hpp"

#include "quantlab/sdk/config.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/plugin.hpp"
#include "quantlab/sdk/problem.hpp"

#include <ATen/Parallel.h>
#include <torch/types.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

namespace fs = std::filesystem;
using ql::ilsvrc12::JpegImage;

constexpr char kOptions[] = R"toml(
data_dir = ""            # the ImageNet root (relative: to [storage] data): train/<wnid>/*.JPEG and val/<wnid>/*.JPEG
val_labels = ""          # for a flat val/ folder: a file of "FILENAME CLASS" lines (CLASS: a wnid or a 0-based index); "": val/ has class folders
classes = 1000           # number of classes (= folders of train/)
crop = 224               # side of the network's input
resize = 256             # evaluation: shorter side resized to this, then a centre crop of `crop`
min_scale = 0.08         # training: random-resized-crop takes between min_scale and all of the image's area
workers = 0              # decoding threads per batch; 0: all cores
on_corrupt = "error"     # error: stop, naming the file | skip: leave a corrupt or non-JPEG image out of its batch and count it
)toml";

struct Settings {
  std::int64_t crop, resize;
  double min_scale;
  int workers;
  bool skip_corrupt;
};

struct Sample {
  fs::path file;
  std::int64_t label;
};

struct Rect {
  int x, y, w, h;
};

// torchvision's RandomResizedCrop.get_params: area share in [min_scale, 1], aspect ratio in
// [3/4, 4/3] (log-uniform), ten tries, then the centre crop of the clamped ratio.
Rect random_resized_crop(int width, int height, double min_scale, std::mt19937_64& engine) {
  const double area = static_cast<double>(width) * height;
  std::uniform_real_distribution<double> scale(min_scale, 1.0), log_ratio(std::log(3.0 / 4.0), std::log(4.0 / 3.0));
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * scale(engine), ratio = std::exp(log_ratio(engine));
    const int w = static_cast<int>(std::lround(std::sqrt(target * ratio)));
    const int h = static_cast<int>(std::lround(std::sqrt(target / ratio)));
    if (w > 0 && h > 0 && w <= width && h <= height) {
      const int y = static_cast<int>(engine() % static_cast<std::uint64_t>(height - h + 1));
      const int x = static_cast<int>(engine() % static_cast<std::uint64_t>(width - w + 1));
      return {x, y, w, h};
    }
  }
  const double ratio = static_cast<double>(width) / height;
  int w = width, h = height;
  if (ratio < 3.0 / 4.0) h = static_cast<int>(std::lround(w / (3.0 / 4.0)));
  if (ratio > 4.0 / 3.0) w = static_cast<int>(std::lround(h * (4.0 / 3.0)));
  return {(width - w) / 2, (height - h) / 2, w, h};
}

// The smallest DCT scale n/8 that keeps `side` source pixels at least `target`; n is 1, 2, 4
// or 8, the scales libjpeg-turbo decodes with SIMD (the others are slower than n = 8).
int eighths_for(int side, std::int64_t target) {
  for (int n : {1, 2, 4}) {
    if (side * n / 8 >= target) return n;
  }
  return 8;
}

// Threads that live as long as the data set and share the images of each batch with the
// calling thread. Short-lived threads would not do: ATen initialises every new thread's
// parallelism on its first op, which re-creates LibTorch's thread pool each time (measured:
// a third of the throughput lost).
class WorkerPool {
 public:
  explicit WorkerPool(int threads) : threads_(threads) {}
  ~WorkerPool() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& worker : workers_) worker.join();
  }

  // Runs task(k) for every k in [0, n) on the pool and the calling thread; returns when done.
  void run(std::int64_t n, const std::function<void(std::int64_t)>& task) {
    std::lock_guard one_at_a_time(run_mutex_);
    std::unique_lock lock(mutex_);
    while (static_cast<int>(workers_.size()) < threads_ - 1) workers_.emplace_back([this] { serve(); });
    task_ = &task;
    size_ = n;
    next_ = 0;
    active_ = static_cast<int>(workers_.size());
    ++generation_;
    lock.unlock();
    wake_.notify_all();
#ifdef _OPENMP
    // The caller's share runs on it alone too; its OpenMP team (the trainer's) stays idle.
    const int previous = omp_get_max_threads();
    omp_set_num_threads(1);
    work();
    omp_set_num_threads(previous);
#else
    work();
#endif
    lock.lock();
    done_.wait(lock, [this] { return active_ == 0; });
    task_ = nullptr;
  }

 private:
  void work() {
    for (std::int64_t k = next_++; k < size_; k = next_++) (*task_)(k);
  }

  void serve() {
    // This thread's own tensor ops stay on it (no OpenMP team of its own).
    (void)at::get_num_threads();
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
    std::uint64_t seen = 0;
    while (true) {
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
      }
      work();
      std::lock_guard lock(mutex_);
      if (--active_ == 0) done_.notify_all();
    }
  }

  int threads_;
  std::vector<std::thread> workers_;
  std::mutex run_mutex_, mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(std::int64_t)>* task_ = nullptr;
  std::int64_t size_ = 0;
  std::atomic<std::int64_t> next_{0};
  int active_ = 0;
  std::uint64_t generation_ = 0;
  bool stop_ = false;
};

class ImageFolderSet : public ql::Dataset {
 public:
  ImageFolderSet(std::vector<Sample> samples, Settings settings, bool training, ql::Log& log)
      : samples_(std::move(samples)), settings_(settings), training_(training), log_(log),
        pool_(std::make_unique<WorkerPool>(settings.workers)) {}

  std::int64_t size() const override { return static_cast<std::int64_t>(samples_.size()); }

  // The normalisation of the evaluation crop (the image resized so that its shorter side is
  // `resize`, centre-cropped to `crop`), as uint8 RGB pixels: what an exported model takes.
  // The data set itself normalises the resampled values before any rounding to bytes.
  std::optional<ql::InputEncoding> input_encoding() const override {
    using Operation = ql::InputStep::Operation;
    return ql::InputEncoding{{{Operation::subtract, {kMean[0], kMean[1], kMean[2]}},
                              {Operation::multiply, {kInverseStd[0], kInverseStd[1], kInverseStd[2]}}}};
  }

  ql::Batch get_batch(const at::Tensor& indices, std::uint64_t seed, bool augment) const override {
    const std::int64_t n = indices.size(0);
    const auto* index = indices.data_ptr<std::int64_t>();
    at::Tensor images = torch::empty({n, 3, settings_.crop, settings_.crop});
    std::vector<char> ok(static_cast<std::size_t>(n), 0);
    std::vector<std::string> errors(static_cast<std::size_t>(n));
    pool_->run(n, [&](std::int64_t k) {
      const Sample& sample = samples_.at(static_cast<std::size_t>(index[k]));
      try {
        load(sample.file, seed + 0x9E3779B97F4A7C15ULL * static_cast<std::uint64_t>(k + 1), augment && training_,
             images[k]);
        ok[static_cast<std::size_t>(k)] = 1;
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(k)] = ql::message_of(e);
      }
    });

    std::vector<std::int64_t> kept;
    for (std::int64_t k = 0; k < n; ++k) {
      if (ok[static_cast<std::size_t>(k)]) {
        kept.push_back(k);
        continue;
      }
      if (!settings_.skip_corrupt) throw ql::Error(errors[static_cast<std::size_t>(k)]);
      std::lock_guard lock(skipped_mutex_);
      if (skipped_files_.insert(errors[static_cast<std::size_t>(k)]).second) {
        log_.warn("skipped {} ({} so far)", errors[static_cast<std::size_t>(k)], skipped_files_.size());
      }
    }
    std::vector<std::int64_t> labels;
    for (std::int64_t k : kept) labels.push_back(samples_[static_cast<std::size_t>(index[k])].label);
    ql::Batch batch;
    const at::Tensor keep = torch::tensor(kept, torch::kInt64);
    batch.inputs = static_cast<std::int64_t>(kept.size()) == n ? images : images.index_select(0, keep);
    batch.targets = torch::tensor(labels, torch::kInt64);
    return batch;
  }

 private:
  // Decodes, crops, resizes, flips and normalises `file` into `target` ([3, crop, crop]).
  void load(const fs::path& file, std::uint64_t seed, bool augment, at::Tensor target) const {
    std::ifstream in(file, std::ios::binary | std::ios::ate);
    QL_CHECK(in.good(), "{}: cannot open", file.string());
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(in.tellg()));
    in.seekg(0);
    QL_CHECK(in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size())).good(),
             "{}: read error", file.string());
    std::mt19937_64 engine(seed);
    const std::int64_t crop = settings_.crop;
    Rect region{};
    bool flip = false;
    JpegImage image;
    std::string error;
    if (augment) {
      const bool decoded = ql::ilsvrc12::decode_jpeg(
          bytes,
          [&](int width, int height) {
            region = random_resized_crop(width, height, settings_.min_scale, engine);
            flip = (engine() & 1) != 0;
            return ql::ilsvrc12::DecodePlan{std::max(eighths_for(region.w, crop), eighths_for(region.h, crop)), region.x,
                                            region.y, region.w, region.h};
          },
          image, error);
      QL_CHECK(decoded, "{}: {}", file.string(), error);
      // The region at the decoded scale, relative to the decoded part.
      const int n = image.scale_eighths;
      const int x = std::clamp(region.x * n / 8 - image.x, 0, image.width - 1);
      const int y = std::clamp(region.y * n / 8 - image.y, 0, image.height - 1);
      const int w = std::max(1, std::min(region.w * n / 8, image.width - x));
      const int h = std::max(1, std::min(region.h * n / 8, image.height - y));
      resample({x, y, w, h}, image, crop, crop, 0, 0, flip, target);
    } else {
      const bool decoded = ql::ilsvrc12::decode_jpeg(
          bytes,
          [&](int width, int height) {
            return ql::ilsvrc12::DecodePlan{eighths_for(std::min(width, height), settings_.resize)};
          },
          image, error);
      QL_CHECK(decoded, "{}: {}", file.string(), error);
      // Shorter side to `resize` (as in the full-size image), then the centre crop.
      const double factor = static_cast<double>(settings_.resize) / std::min(image.full_width, image.full_height);
      const auto h = std::max<std::int64_t>(crop, std::lround(image.full_height * factor));
      const auto w = std::max<std::int64_t>(crop, std::lround(image.full_width * factor));
      resample({0, 0, image.width, image.height}, image, h, w, (h - crop) / 2, (w - crop) / 2, false, target);
    }
  }

  void resample(ql::ilsvrc12::SourceRegion region, const JpegImage& image, std::int64_t height, std::int64_t width,
                std::int64_t window_y, std::int64_t window_x, bool flip, const at::Tensor& target) const {
    const auto crop = static_cast<int>(settings_.crop);
    const ql::ilsvrc12::ResampleTarget to{target.data_ptr<float>(), static_cast<int>(height), static_cast<int>(width),
                                          crop, crop, static_cast<int>(window_y), static_cast<int>(window_x), flip,
                                          kMean, kInverseStd};
    ql::ilsvrc12::resample_normalised(image.rgb.data(), image.width, region, to);
  }

  std::vector<Sample> samples_;
  Settings settings_;
  bool training_;
  ql::Log& log_;  // outlives the data set (Problem::dataset)
  // ImageNet's per-channel statistics, in byte units.
  static constexpr float kMean[3] = {0.485f * 255, 0.456f * 255, 0.406f * 255};
  static constexpr float kInverseStd[3] = {1 / (0.229f * 255), 1 / (0.224f * 255), 1 / (0.225f * 255)};
  std::unique_ptr<WorkerPool> pool_;
  mutable std::mutex skipped_mutex_;
  mutable std::set<std::string> skipped_files_;
};

bool is_jpeg_name(const fs::path& path) {
  std::string extension = path.extension().string();
  std::transform(extension.begin(), extension.end(), extension.begin(), [](unsigned char c) { return std::tolower(c); });
  return extension == ".jpeg" || extension == ".jpg";
}

std::vector<fs::path> jpeg_files(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.is_regular_file() && is_jpeg_name(entry.path())) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

class Ilsvrc12 : public ql::Problem {
 public:
  explicit Ilsvrc12(const ql::Config& options)
      : root_(options.get_path("data_dir")),
        val_labels_(options.get_path("val_labels")) {
    settings_.crop = options.get_int("crop", 8, 4096);
    settings_.resize = options.get_int("resize", 8, 8192);
    if (settings_.resize < settings_.crop) {
      throw ql::ConfigError(options.error_message("resize", "must be at least crop"));
    }
    settings_.min_scale = options.get_double("min_scale", 0.001, 1.0);
    const auto workers = options.get_int("workers", 0, 1024);
    settings_.workers = workers > 0 ? static_cast<int>(workers) : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    settings_.skip_corrupt = options.get_choice("on_corrupt", {"error", "skip"}) == "skip";
    spec_.input_kind = ql::InputKind::image;
    spec_.input_shape = {3, settings_.crop, settings_.crop};
    spec_.num_classes = options.get_int("classes", 2, 1 << 20);
  }

  ql::DatasetSpec spec() const override { return spec_; }

  std::shared_ptr<const ql::Dataset> dataset(ql::Split split, ql::Log& log) override {
    if (!splits_.train) load(log);
    return splits_.of(split);
  }

 private:
  void load(ql::Log& log) {
    QL_CHECK(!root_.empty(), "problem ilsvrc12: set problem.data_dir to the ImageNet root (train/, val/)");
    const fs::path train_dir = root_ / "train", val_dir = root_ / "val";
    QL_CHECK(fs::is_directory(train_dir), "{}: not found (expected train/<wnid>/*.JPEG)", train_dir.string());
    std::vector<std::string> wnids;
    for (const auto& entry : fs::directory_iterator(train_dir)) {
      if (entry.is_directory()) wnids.push_back(entry.path().filename().string());
    }
    std::sort(wnids.begin(), wnids.end());
    QL_CHECK(static_cast<std::int64_t>(wnids.size()) == spec_.num_classes,
             "{}: {} class folders, but classes = {}", train_dir.string(), wnids.size(), spec_.num_classes);
    std::map<std::string, std::int64_t> label_of;
    for (std::size_t c = 0; c < wnids.size(); ++c) label_of[wnids[c]] = static_cast<std::int64_t>(c);
    spec_.class_names = wnids;

    std::vector<Sample> train;
    for (const std::string& wnid : wnids) {
      for (const fs::path& file : jpeg_files(train_dir / wnid)) train.push_back({file, label_of[wnid]});
    }
    QL_CHECK(!train.empty(), "{}: no JPEG files", train_dir.string());

    std::vector<Sample> test;
    if (!val_labels_.empty()) {
      std::ifstream in(val_labels_);
      QL_CHECK(in.good(), "{}: cannot open", val_labels_.string());
      std::string line;
      for (std::size_t number = 1; std::getline(in, line); ++number) {
        std::istringstream fields(line);
        std::string name, label;
        if (!(fields >> name)) continue;
        QL_CHECK(static_cast<bool>(fields >> label), "{}:{}: expected FILENAME CLASS", val_labels_.string(), number);
        std::int64_t value = -1;
        if (auto it = label_of.find(label); it != label_of.end()) {
          value = it->second;
        } else if (std::all_of(label.begin(), label.end(), ::isdigit)) {
          value = std::stoll(label);
        }
        QL_CHECK(value >= 0 && value < spec_.num_classes, "{}:{}: unknown class '{}'", val_labels_.string(), number,
                 label);
        test.push_back({val_dir / name, value});
      }
    } else if (fs::is_directory(val_dir)) {
      for (const std::string& wnid : wnids) {
        if (fs::is_directory(val_dir / wnid)) {
          for (const fs::path& file : jpeg_files(val_dir / wnid)) test.push_back({file, label_of[wnid]});
        }
      }
    }

    // val/ is the test split; a validation split is the host's to hold out of train/.
    splits_.train = std::make_shared<ImageFolderSet>(std::move(train), settings_, true, log);
    if (!test.empty()) splits_.test = std::make_shared<ImageFolderSet>(std::move(test), settings_, false, log);
  }

  fs::path root_, val_labels_;
  Settings settings_{};
  ql::DatasetSpec spec_;
  ql::Splits splits_;
};

}  // namespace

QL_PLUGIN(problem, "ilsvrc12", "0.1.0", "ImageNet (ILSVRC-2012) JPEG folders, decoded with libjpeg-turbo", kOptions,
          Ilsvrc12)
