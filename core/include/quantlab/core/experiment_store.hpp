// Results on disk: experiment units <logs>/<problem>/<topology>/expNNNN allocated atomically,
// and files (configs, tables, checkpoints) written to a temporary name, synced and renamed,
// so a crash or a full disk never leaves a half-written file under the real name.
//
//   fs::path unit = allocate_unit("logs", "mnist", "mlp");   // logs/mnist/mlp/exp0003
//   write_file_atomically(unit / "config.toml", text);
//   save_checkpoint(unit / "fold0/checkpoints/last.pt", [&](auto& archive) { ... });
#pragma once

#include <c10/core/Device.h>

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace torch::serialize {
class InputArchive;
class OutputArchive;
}

namespace ql::core {

/// Creates and returns the next free expNNNN folder; two processes never get the same one.
std::filesystem::path allocate_unit(const std::filesystem::path& logs, std::string_view problem,
                                    std::string_view topology);

/// Creates and returns the next free <prefix>NNNN folder of `parent` (made if needed).
std::filesystem::path allocate_numbered(const std::filesystem::path& parent, std::string_view prefix);

/// The expNNNN folders of `parent` in increasing order (none when it does not exist).
std::vector<std::filesystem::path> list_units(const std::filesystem::path& parent);

/// The whole of a text file; throws ql::Error naming it when it cannot be read.
std::string read_text_file(const std::filesystem::path& path);

/// Calls `write` with a temporary path next to `path`, then syncs it and renames it to
/// `path`; on any failure the temporary file is removed and `path` keeps its old content.
void write_atomically(const std::filesystem::path& path,
                      const std::function<void(const std::filesystem::path& temporary)>& write);

/// Writes `content` to `path` via a synced temporary file and a rename.
void write_file_atomically(const std::filesystem::path& path, std::string_view content);

/// The 16 bytes QuantLab appends to the files it reads back (checkpoints, metrics.h5): `magic`
/// (4 characters), the CRC-32C of `content` (little-endian u32) and its length (u64). Readers
/// check it before a third-party parser (LibTorch's, HDF5's) sees a byte, so a corrupt or
/// truncated file is refused by name instead of reaching code that may crash on it.
std::string checksum_trailer(std::string_view magic, std::string_view content);

/// The length of `bytes` (the content of file `path`) before its trailer, after checking it;
/// throws ql::Error naming the file and `what` it should be.
std::size_t checked_length(const std::filesystem::path& path, std::string_view bytes, std::string_view magic,
                           std::string_view what);

/// Writes a LibTorch archive filled by `fill` to `path` atomically, with a "QLCK" trailer (the
/// archive's own zip CRCs are not checked by LibTorch's reader).
void save_checkpoint(const std::filesystem::path& path,
                     const std::function<void(torch::serialize::OutputArchive&)>& fill);

/// The archive bytes of a checkpoint after checking its trailer; throws ql::Error naming the
/// file when it is truncated, changed or not a QuantLab checkpoint.
std::string read_checkpoint(const std::filesystem::path& path);

/// Opens archive bytes (from read_checkpoint) for reading, its tensors on `device` whatever
/// device they were saved from (a unit trained on a GPU reads on the CPU, and back).
void load_archive(torch::serialize::InputArchive& archive, const std::string& bytes,
                  c10::Device device = c10::kCPU);

}  // namespace ql::core
