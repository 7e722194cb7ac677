// The files `qlsdk new-plugin` writes, by template name (templates/*.in, embedded at build time).
#pragma once

#include <map>
#include <string>

namespace ql::sdk_tool {

const std::map<std::string, std::string>& templates();

}  // namespace ql::sdk_tool
