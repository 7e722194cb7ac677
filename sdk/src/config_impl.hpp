// The inside of ql::Config, shared by libqlsdk and the host library (never installed):
// a parsed TOML document and the table of it a view looks at.
#pragma once

#include "quantlab/sdk/config.hpp"

#include <toml++/toml.h>

#include <memory>
#include <string>

namespace ql {

struct Config::Impl {
  std::shared_ptr<const toml::table> root;  ///< keeps the document alive
  const toml::table* table = nullptr;       ///< the viewed table inside `root`
  std::string path;                         ///< dotted path of `table`, "" for the root
  std::filesystem::path base_dir;           ///< what relative get_path() values are relative to
};

/// "file:line:column" of a node ("<defaults>" when the node came from no file).
std::string source_location(const toml::node& node);
/// "string", "integer", "array", ... for messages.
std::string_view type_name(toml::node_type type);

}  // namespace ql
