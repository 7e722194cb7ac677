#include "run/scratch_folder.hpp"

#include "quantlab/sdk/error.hpp"

#include <cerrno>
#include <cstring>
#include <stdlib.h>

namespace ql::core::run {

namespace fs = std::filesystem;

ScratchFolder::ScratchFolder(const std::string& prefix) {
  std::string pattern = (fs::temp_directory_path() / (prefix + "XXXXXX")).string();
  QL_CHECK(::mkdtemp(pattern.data()) != nullptr, "cannot create a scratch folder {}: {}", pattern,
           std::strerror(errno));
  path_ = pattern;
}

ScratchFolder::~ScratchFolder() {
  std::error_code ignored;
  fs::remove_all(path_, ignored);
}

}  // namespace ql::core::run
