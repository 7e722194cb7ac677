// Writing a plugin's artefacts into its folder: tables as tables/NAME.csv and files by name,
// both atomically, and names that must stay inside the folder. HostContext and the
// conformance checks' context both write through these.
#pragma once

#include "quantlab/sdk/context.hpp"

#include <filesystem>
#include <functional>
#include <string_view>

namespace ql::core::run {

/// `table` as `dir`/tables/NAME.csv, replaced atomically.
void write_artifact_table(const std::filesystem::path& dir, std::string_view name, const Table& table);
/// `dir`/NAME, filled by `write` at a temporary path, then synced and renamed into place.
void write_artifact_file(const std::filesystem::path& dir, std::string_view name,
                         const std::function<void(const std::filesystem::path& temporary)>& write);

}  // namespace ql::core::run
