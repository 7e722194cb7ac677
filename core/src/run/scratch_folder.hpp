// A private folder in the temporary directory, removed with everything in it: where ranks
// other than 0 keep their files, and where the conformance checks let plugins write.
#pragma once

#include <filesystem>
#include <string>

namespace ql::core::run {

class ScratchFolder {
 public:
  /// Makes $TMPDIR/PREFIXxxxxxx; throws ql::Error when it cannot.
  explicit ScratchFolder(const std::string& prefix);
  ~ScratchFolder();
  ScratchFolder(const ScratchFolder&) = delete;
  ScratchFolder& operator=(const ScratchFolder&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace ql::core::run
