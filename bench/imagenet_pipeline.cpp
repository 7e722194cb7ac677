// Throughput of the ILSVRC12 training pipeline (read, decode, random-resized-crop 224, flip,
// normalise, batch) through the same loader the trainer uses; bench/imagenet_pipeline.py does
// the same with torchvision's ImageFolder + DataLoader, and bench/run_bench.sh compares them.
//
// usage: imagenet_pipeline DIR IMAGES WORKERS BATCH [train|eval]
//   eval: the evaluation transform instead (resize 256 + centre crop 224, no flip)
//   makes DIR/train/<class>/*.JPEG first if absent: IMAGES full-size (500x375, ImageNet's
//   median) JPEGs of smooth random content in 8 classes, quality 90.
// prints: quantlab images_per_second
#include "plugins/problems/ilsvrc12/jpeg_decoder.hpp"
#include "quantlab/core/batch_loader.hpp"
#include "quantlab/core/experiment_config.hpp"
#include "quantlab/core/host_memory.hpp"
#include "quantlab/core/plugin_registry.hpp"
#include "quantlab/sdk/problem.hpp"

#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

namespace fs = std::filesystem;

namespace {

void make_images(const fs::path& dir, int count) {
  std::mt19937 engine(1);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::normal_distribution<double> noise(0.0, 6.0);
  const int width = 500, height = 375;
  for (int i = 0; i < count; ++i) {
    const fs::path file = dir / "train" / fmt::format("class{}", i % 8) / fmt::format("image_{:05d}.JPEG", i);
    fs::create_directories(file.parent_path());
    double a[3], b[3], c[3];
    for (int k = 0; k < 3; ++k) a[k] = 0.05 * uniform(engine), b[k] = 0.05 * uniform(engine), c[k] = 6.3 * uniform(engine);
    std::vector<std::uint8_t> rgb;
    rgb.reserve(static_cast<std::size_t>(width * height * 3));
    for (int y = 0; y < height; ++y) {
      for (int x = 0; x < width; ++x) {
        for (int k = 0; k < 3; ++k) {
          const double v = 128 + 90 * std::sin(a[k] * x + b[k] * y + c[k]) + noise(engine);
          rgb.push_back(static_cast<std::uint8_t>(std::clamp(v, 0.0, 255.0)));
        }
      }
    }
    const auto bytes = ql::ilsvrc12::encode_jpeg(rgb, width, height, 90);
    std::ofstream(file, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                                static_cast<std::streamsize>(bytes.size()));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5 && argc != 6) {
    fmt::print(stderr, "usage: imagenet_pipeline DIR IMAGES WORKERS BATCH [train|eval]\n");
    return 2;
  }
  const bool augment = argc < 6 || std::string(argv[5]) != "eval";
  const fs::path dir = argv[1];
  const int images = std::stoi(argv[2]), workers = std::stoi(argv[3]), batch = std::stoi(argv[4]);
  if (!fs::exists(dir / "train")) make_images(dir, images);
  at::set_num_threads(workers);
  ql::core::keep_freed_memory_for_reuse();  // as qlhost does

  ql::core::PluginRegistry registry({QL_BUILD_PLUGIN_DIR});
  const auto& plugin = registry.find(ql::PluginKind::problem, "ilsvrc12");
  auto problem = registry.create<ql::Problem>(
      "ilsvrc12", ql::core::plugin_options(plugin, {"data_dir=" + dir.string(), "classes=8",
                                                    fmt::format("workers={}", workers)}));
  const auto train = problem->dataset(ql::Split::train, ql::stderr_log());
  const std::int64_t n = train->size();
  auto run = [&](std::int64_t epoch) {
    ql::core::BatchLoader loader(train, ql::core::epoch_order(n, 1, epoch), batch, 7, augment, 4);
    std::int64_t seen = 0;
    const auto start = std::chrono::steady_clock::now();
    while (auto b = loader.next()) seen += b->inputs.size(0);
    return static_cast<double>(seen) / std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  run(0);  // warm the page cache
  fmt::print("quantlab {:.1f}\n", run(1));
  return 0;
}
