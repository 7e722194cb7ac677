#include "support/test_support.hpp"

#include "config_impl.hpp"
#include "quantlab/core/experiment_store.hpp"
#include "quantlab/core/unit_record.hpp"
#include "plugins/problems/mnist/idx_file.hpp"

#include <gtest/gtest.h>
#include <zlib.h>

#include <fmt/format.h>
#include <torch/serialize/input-archive.h>

#include <chrono>
#include <functional>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace ql::test {

namespace fs = std::filesystem;

TempDir::TempDir() {
  std::string pattern = (fs::temp_directory_path() / "quantlab-test-XXXXXX").string();
  const char* made = mkdtemp(pattern.data());
  if (!made) throw std::runtime_error("mkdtemp failed");
  path_ = made;
}

TempDir::~TempDir() {
  std::error_code ignored;
  fs::remove_all(path_, ignored);
}

void write_text(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

void write_bytes(const fs::path& path, const std::vector<std::uint8_t>& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                              static_cast<std::streamsize>(bytes.size()));
}

std::vector<std::uint8_t> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_gzip(const fs::path& path, const std::vector<std::uint8_t>& bytes) {
  fs::create_directories(path.parent_path());
  gzFile file = gzopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr);
  gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(file);
}

Config config_from_toml(const std::string& text, const std::string& source) {
  auto root = std::make_shared<toml::table>(toml::parse(text, source));
  auto impl = std::make_shared<Config::Impl>();
  impl->root = root;
  impl->table = root.get();
  return Config(std::move(impl));
}

std::string quoted(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

CommandResult run_command(const std::string& command_line) {
  TempDir capture;
  const fs::path out = capture / "out", err = capture / "err";
  const std::string command = command_line + " >" + quoted(out.string()) + " 2>" + quoted(err.string());
  const int status = std::system(command.c_str());
  CommandResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.out = read_text(out);
  result.err = read_text(err);
  return result;
}

std::string qlhost_program() {
  const char* chosen = std::getenv("QL_TEST_QLHOST");
  return chosen != nullptr && *chosen != '\0' ? chosen : QL_TEST_QLHOST;
}

CommandResult run_qlhost(const std::string& args, const fs::path& home) {
  return run_command("HOME=" + quoted(home.string()) + " QL_PLUGIN_PATH= " + quoted(qlhost_program()) + " " + args);
}

void write_idx_dataset(const fs::path& dir, std::int64_t train, std::int64_t test, std::int64_t size,
                       std::int64_t classes, bool gzip) {
  std::mt19937 engine(7);
  std::uniform_int_distribution<int> noise(0, 60);
  auto make = [&](std::int64_t count, const std::string& images_name, const std::string& labels_name) {
    mnist::IdxArray images{{count, size, size}, {}};
    mnist::IdxArray labels{{count}, {}};
    for (std::int64_t i = 0; i < count; ++i) {
      const auto label = static_cast<std::uint8_t>(i % classes);
      labels.data.push_back(label);
      for (std::int64_t r = 0; r < size; ++r) {
        for (std::int64_t c = 0; c < size; ++c) {
          const bool bar = r == (label * size) / classes;
          images.data.push_back(static_cast<std::uint8_t>(bar ? 200 + noise(engine) / 2 : noise(engine)));
        }
      }
    }
    auto put = [&](const mnist::IdxArray& array, const std::string& name) {
      if (gzip) write_gzip(dir / (name + ".gz"), mnist::encode_idx(array));
      else write_bytes(dir / name, mnist::encode_idx(array));
    };
    put(images, images_name);
    put(labels, labels_name);
  };
  make(train, "train-images-idx3-ubyte", "train-labels-idx1-ubyte");
  make(test, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte");
}

std::string small_mlp_experiment(int seed) {
  return fmt::format(R"([experiment]
seed = {}
[storage]
logs = "logs"
data = "."
[problem]
plugin = "mnist"
data_dir = "data"
image_size = [28, 28]
classes = 4
[topology]
plugin = "mlp"
hidden = [64]
[training]
epochs = 3
batch_size = 16
checkpoint_every_steps = 5
[training.optimizer]
name = "sgd"
lr = 0.002
momentum = 0.9
[run]
threads = 1
deterministic = true
)",
                     seed);
}

namespace {

// Calls `visit(key, archive)` for every key of the checkpoint that starts with `prefix`.
void for_each_entry(const fs::path& checkpoint, const std::string& prefix,
                    const std::function<void(const std::string&, torch::serialize::InputArchive&)>& visit) {
  torch::serialize::InputArchive archive;
  ql::core::load_archive(archive, ql::core::read_checkpoint(checkpoint));
  for (const std::string& key : archive.keys()) {
    if (key.rfind(prefix, 0) == 0) visit(key, archive);
  }
}

}  // namespace

std::map<std::string, at::Tensor> checkpoint_model(const fs::path& checkpoint) {
  std::map<std::string, at::Tensor> tensors;
  for_each_entry(checkpoint, "model/", [&](const std::string& key, torch::serialize::InputArchive& archive) {
    archive.read(key, tensors[key], /*is_buffer=*/true);
  });
  return tensors;
}

std::map<std::string, std::string> checkpoint_quantizers(const fs::path& checkpoint) {
  std::map<std::string, std::string> described;
  for_each_entry(checkpoint, "quantizer/", [&](const std::string& key, torch::serialize::InputArchive& archive) {
    c10::IValue value;
    if (archive.try_read(key, value) && value.isString()) described[key.substr(10)] = value.toStringRef();
  });
  return described;
}

bool wait_for_checkpointed_steps(const fs::path& unit, std::int64_t steps) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    try {
      const auto record = ql::core::read_unit_record(unit);
      if (!record.folds.empty() && record.folds[0].steps >= steps) return true;
    } catch (const std::exception&) {
      // Not written yet, or being replaced.
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

Confusion read_confusion(const std::filesystem::path& csv) {
  std::istringstream lines(read_text(csv));
  std::string line, cell;
  Confusion confusion;
  std::getline(lines, line);
  std::istringstream header(line);
  std::getline(header, cell, ',');  // "label"
  while (std::getline(header, cell, ',')) confusion.classes.push_back(cell);
  for (int row = 0; std::getline(lines, line); ++row) {
    std::istringstream cells(line);
    std::getline(cells, cell, ',');  // the label's name
    for (int column = 0; std::getline(cells, cell, ','); ++column) {
      confusion.total += std::stod(cell);
      if (column == row) confusion.diagonal += std::stod(cell);
    }
  }
  return confusion;
}

}  // namespace ql::test
