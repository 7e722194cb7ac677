// Results on disk: experiment units <logs>/<problem>/<topology>/expNNNN allocated atomically,
// and files (configs, tables, checkpoints) written to a temporary name, synced and renamed,
// so a crash or a full disk never leaves a half-written file under the real name.
//
//   fs::path unit = allocate_unit("logs", "mnist", "mlp");   // logs/mnist/mlp/exp0003
//   write_file_atomically(unit / "config.toml", text);
//   save_checkpoint(unit / "fold0/checkpoints/last.pt", [&](auto& archive) { ... });
#pragma once

#include <filesystem>
#include <functional>
#include <string_view>

namespace torch::serialize {
class OutputArchive;
}

namespace ql::core {

/// Creates and returns the next free expNNNN folder; two processes never get the same one.
std::filesystem::path allocate_unit(const std::filesystem::path& logs, std::string_view problem,
                                    std::string_view topology);

/// Writes `content` to `path` via a synced temporary file and a rename.
void write_file_atomically(const std::filesystem::path& path, std::string_view content);

/// Writes a LibTorch archive filled by `fill` to `path` atomically.
void save_checkpoint(const std::filesystem::path& path,
                     const std::function<void(torch::serialize::OutputArchive&)>& fill);

}  // namespace ql::core
