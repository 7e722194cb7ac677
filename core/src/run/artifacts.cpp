#include "run/artifacts.hpp"

#include "quantlab/core/experiment_store.hpp"
#include "quantlab/core/report.hpp"
#include "quantlab/sdk/error.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace ql::core::run {

namespace fs = std::filesystem;

namespace {

// A plugin names its artefacts; a name must stay inside its folder.
fs::path artifact_path(const fs::path& dir, std::string_view name) {
  const fs::path relative(name);
  QL_CHECK(!name.empty() && relative.is_relative() &&
               std::none_of(relative.begin(), relative.end(), [](const fs::path& part) { return part == ".."; }),
           "artefact name '{}' must be a relative path inside the plugin's folder", name);
  const fs::path file = dir / relative;
  fs::create_directories(file.parent_path());
  return file;
}

}  // namespace

void write_artifact_table(const fs::path& dir, std::string_view name, const Table& table) {
  write_file_atomically(artifact_path(dir / "tables", fmt::format("{}.csv", name)), csv_table(table.columns, table.rows));
}

void write_artifact_file(const fs::path& dir, std::string_view name,
                         const std::function<void(const fs::path& temporary)>& write) {
  write_atomically(artifact_path(dir, name), write);
}

}  // namespace ql::core::run
