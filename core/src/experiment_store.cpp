#include "quantlab/core/experiment_store.hpp"

#include "quantlab/sdk/error.hpp"

#include <torch/serialize/output-archive.h>

#include <cerrno>
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

fs::path allocate_unit(const fs::path& logs, std::string_view problem, std::string_view topology) {
  const fs::path parent = logs / problem / topology;
  std::error_code error;
  fs::create_directories(parent, error);
  if (error) throw Error(fmt::format("cannot create {}: {}", parent.string(), error.message()));
  int next = 1;
  for (const auto& entry : fs::directory_iterator(parent, error)) {
    const std::string name = entry.path().filename().string();
    if (name.size() == 7 && name.rfind("exp", 0) == 0) {
      next = std::max(next, std::atoi(name.c_str() + 3) + 1);
    }
  }
  // mkdir is atomic: a racing process that took the same number makes us try the next one.
  for (int attempt = 0; attempt < 10000; ++attempt, ++next) {
    const fs::path unit = parent / fmt::format("exp{:04d}", next);
    if (::mkdir(unit.c_str(), 0777) == 0) return unit;
    if (errno != EEXIST) throw Error(system_error("cannot create", unit));
  }
  throw Error(fmt::format("cannot allocate an experiment folder in {}", parent.string()));
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

void save_checkpoint(const fs::path& path,
                     const std::function<void(torch::serialize::OutputArchive&)>& fill) {
  const fs::path temporary = temporary_for(path);
  try {
    torch::serialize::OutputArchive archive;
    fill(archive);
    archive.save_to(temporary.string());
  } catch (const std::exception& e) {
    std::error_code ignored;
    fs::remove(temporary, ignored);
    throw Error(fmt::format("cannot write checkpoint {}: {}", path.string(), message_of(e)));
  }
  commit(temporary, path);
}

}  // namespace ql::core
