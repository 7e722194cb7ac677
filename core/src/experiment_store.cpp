#include "quantlab/core/experiment_store.hpp"

#include "quantlab/sdk/error.hpp"

#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <boost/crc.hpp>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <sstream>
#include <cstring>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ql::core {

namespace fs = std::filesystem;

namespace {

std::string system_error(std::string_view what, const fs::path& path) {
  return fmt::format("{} {}: {}", what, path.string(), std::strerror(errno));
}

void sync_path(const fs::path& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) throw Error(system_error("cannot open", path));
  const int result = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  errno = saved;
  if (result != 0) throw Error(system_error("cannot sync", path));
}

fs::path temporary_for(const fs::path& path) {
  return path.parent_path() / fmt::format(".{}.tmp{}", path.filename().string(), ::getpid());
}

// Syncs `temporary`, renames it to `path` and syncs the folder; removes it on failure.
void commit(const fs::path& temporary, const fs::path& path) {
  try {
    sync_path(temporary, O_RDONLY);
    if (::rename(temporary.c_str(), path.c_str()) != 0) throw Error(system_error("cannot rename to", path));
    sync_path(path.parent_path().empty() ? fs::path(".") : path.parent_path(), O_RDONLY | O_DIRECTORY);
  } catch (...) {
    std::error_code ignored;
    fs::remove(temporary, ignored);
    throw;
  }
}

}  // namespace

fs::path allocate_numbered(const fs::path& parent, std::string_view prefix) {
  std::error_code error;
  fs::create_directories(parent, error);
  if (error) throw Error(fmt::format("cannot create {}: {}", parent.string(), error.message()));
  int next = 1;
  for (const auto& entry : fs::directory_iterator(parent, error)) {
    const std::string name = entry.path().filename().string();
    if (name.size() == prefix.size() + 4 && name.rfind(prefix, 0) == 0) {
      next = std::max(next, std::atoi(name.c_str() + prefix.size()) + 1);
    }
  }
  // mkdir is atomic: a racing process that took the same number makes us try the next one.
  for (int attempt = 0; attempt < 10000; ++attempt, ++next) {
    const fs::path unit = parent / fmt::format("{}{:04d}", prefix, next);
    if (::mkdir(unit.c_str(), 0777) == 0) return unit;
    if (errno != EEXIST) throw Error(system_error("cannot create", unit));
  }
  throw Error(fmt::format("cannot allocate a {}NNNN folder in {}", prefix, parent.string()));
}

fs::path allocate_unit(const fs::path& logs, std::string_view problem, std::string_view topology) {
  return allocate_numbered(logs / problem / topology, "exp");
}

std::vector<fs::path> list_units(const fs::path& parent) {
  std::vector<fs::path> units;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(parent, error)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory() && name.size() == 7 && name.rfind("exp", 0) == 0 &&
        name.find_first_not_of("0123456789", 3) == std::string::npos) {
      units.push_back(entry.path());
    }
  }
  std::sort(units.begin(), units.end());
  return units;
}

std::string read_text_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  QL_CHECK(in.good(), "cannot read {}: {}", path.string(), std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_file_atomically(const fs::path& path, std::string_view content) {
  const fs::path temporary = temporary_for(path);
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) throw Error(system_error("cannot create", temporary));
  std::size_t written = 0;
  while (written < content.size()) {
    const ssize_t n = ::write(fd, content.data() + written, content.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string message = system_error("cannot write", path);
      ::close(fd);
      std::error_code ignored;
      fs::remove(temporary, ignored);
      throw Error(message);
    }
    written += static_cast<std::size_t>(n);
  }
  ::close(fd);
  commit(temporary, path);
}

void write_atomically(const fs::path& path, const std::function<void(const fs::path&)>& write) {
  const fs::path temporary = temporary_for(path);
  try {
    write(temporary);
  } catch (...) {
    std::error_code ignored;
    fs::remove(temporary, ignored);
    throw;
  }
  commit(temporary, path);
}

namespace {

constexpr std::string_view kCheckpointMagic = "QLCK";
constexpr std::size_t kTrailerSize = 16;

std::uint32_t crc32c(const void* data, std::size_t size) {
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
  crc.process_bytes(data, size);
  return crc.checksum();
}

template <typename T>
void put_little_endian(char* out, T value) {
  for (std::size_t i = 0; i < sizeof(T); ++i) out[i] = static_cast<char>((value >> (8 * i)) & 0xff);
}

template <typename T>
T get_little_endian(const char* in) {
  T value = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) value |= static_cast<T>(static_cast<unsigned char>(in[i])) << (8 * i);
  return value;
}

}  // namespace

std::string checksum_trailer(std::string_view magic, std::string_view content) {
  QL_CHECK(magic.size() == 4, "a trailer's magic has 4 characters");
  char trailer[kTrailerSize];
  std::memcpy(trailer, magic.data(), 4);
  put_little_endian<std::uint32_t>(trailer + 4, crc32c(content.data(), content.size()));
  put_little_endian<std::uint64_t>(trailer + 8, content.size());
  return std::string(trailer, kTrailerSize);
}

std::size_t checked_length(const fs::path& path, std::string_view bytes, std::string_view magic, std::string_view what) {
  QL_CHECK(bytes.size() >= kTrailerSize && bytes.substr(bytes.size() - kTrailerSize, 4) == magic,
           "{}: not a QuantLab {} or truncated (no checksum trailer at its end)", path.string(), what);
  const char* trailer = bytes.data() + bytes.size() - kTrailerSize;
  const auto stored = get_little_endian<std::uint32_t>(trailer + 4);
  const auto length = get_little_endian<std::uint64_t>(trailer + 8);
  const std::size_t content = bytes.size() - kTrailerSize;
  QL_CHECK(length == content, "{}: truncated or extended {} ({} bytes before the trailer, which says {})",
           path.string(), what, content, length);
  const std::uint32_t computed = crc32c(bytes.data(), content);
  QL_CHECK(computed == stored, "{}: checksum mismatch (CRC-32C {:08x}, stored {:08x}): the {} is corrupt",
           path.string(), computed, stored, what);
  return content;
}

void save_checkpoint(const fs::path& path,
                     const std::function<void(torch::serialize::OutputArchive&)>& fill) {
  std::string bytes;
  try {
    torch::serialize::OutputArchive archive;
    fill(archive);
    std::ostringstream out;
    archive.save_to(out);
    bytes = std::move(out).str();
  } catch (const std::exception& e) {
    throw Error(fmt::format("cannot write checkpoint {}: {}", path.string(), message_of(e)));
  }
  bytes += checksum_trailer(kCheckpointMagic, bytes);
  write_file_atomically(path, bytes);
}

std::string read_checkpoint(const fs::path& path) {
  std::string bytes = read_text_file(path);
  bytes.resize(checked_length(path, bytes, kCheckpointMagic, "checkpoint"));
  return bytes;
}

void load_archive(torch::serialize::InputArchive& archive, const std::string& bytes, c10::Device device) {
  archive.load_from(bytes.data(), bytes.size(), device);
}

}  // namespace ql::core
