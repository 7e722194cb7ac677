// qlsdk: the plugin author's tool. Scaffolds a plugin project, builds it against the
// installed SDK, and inspects or checks a built plugin — all without touching QuantLab's
// source. Thin: the reading, checking and conformance logic lives in core.
#include "quantlab/core/cli.hpp"
#include "quantlab/core/conformance.hpp"
#include "quantlab/core/plugin_file.hpp"
#include "quantlab/core/plugin_registry.hpp"
#include "quantlab/sdk/error.hpp"
#include "templates.hpp"

#include <boost/program_options.hpp>
#include <fmt/format.h>

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <regex>

namespace po = boost::program_options;
namespace fs = std::filesystem;
using ql::core::kExitFailure;
using ql::core::kExitOk;
using ql::core::kExitUsage;

namespace {

constexpr char kUsage[] = R"(usage: qlsdk COMMAND [OPTIONS]

commands:
  new-plugin NAME --kind problem|topology|algorithm [--dir DIR]
                          write a buildable plugin project DIR/NAME (default DIR: .)
  build [DIR] [-DK=V]     configure and build the plugin project DIR (default .) against this SDK
  inspect FILE.so         print a plugin's descriptor without running its code, or why it is refused
  check FILE.so [--set KEY=VALUE ...]
                          load the plugin and run the conformance checks of its kind

Run 'qlsdk COMMAND --help' for a command's options.
)";

struct Command {
  po::options_description options;
  po::positional_options_description positional;
  po::options_description hidden;
};

po::variables_map parse(const std::vector<std::string>& args, Command& command) {
  po::options_description all;
  all.add(command.options).add(command.hidden);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(all).positional(command.positional).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw ql::ConfigError(e.what());
  }
  return vm;
}

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (std::size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

// my_quantizer -> MyQuantizer
std::string class_name(const std::string& name) {
  std::string result;
  bool upper = true;
  for (char c : name) {
    if (c == '_') {
      upper = true;
      continue;
    }
    result += upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c;
    upper = false;
  }
  return result.empty() || std::isdigit(static_cast<unsigned char>(result[0])) ? "Plugin" + result : result;
}

void write_new_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out.flush()) throw ql::Error(fmt::format("cannot write {}", path.string()));
}

int command_new_plugin(const std::vector<std::string>& args) {
  Command command;
  command.options.add_options()("help,h", "show this help")
      ("kind", po::value<std::string>(), "problem, topology or algorithm")
      ("dir", po::value<std::string>()->default_value("."), "folder in which the project folder NAME is made");
  command.hidden.add_options()("name", po::value<std::string>());
  command.positional.add("name", 1);
  const po::variables_map vm = parse(args, command);
  if (vm.count("help")) {
    std::cout << "usage: qlsdk new-plugin NAME --kind problem|topology|algorithm [--dir DIR]\n\n" << command.options;
    return kExitOk;
  }
  if (!vm.count("name")) throw ql::ConfigError("new-plugin: missing NAME");
  if (!vm.count("kind")) throw ql::ConfigError("new-plugin: missing --kind problem|topology|algorithm");
  const std::string name = vm["name"].as<std::string>();
  const std::string kind = vm["kind"].as<std::string>();
  if (!std::regex_match(name, std::regex("[A-Za-z_][A-Za-z0-9_]{0,63}"))) {
    throw ql::ConfigError(fmt::format("new-plugin: '{}' is not a valid plugin name (letters, digits and "
                                      "underscores, not starting with a digit, at most 64 characters)",
                                      name));
  }
  if (kind != "problem" && kind != "topology" && kind != "algorithm") {
    throw ql::ConfigError(fmt::format("new-plugin: unknown kind '{}' (expected problem, topology or algorithm)", kind));
  }
  const fs::path project = fs::path(vm["dir"].as<std::string>()) / name;
  std::error_code error;
  if (fs::exists(project, error)) {
    throw ql::ConfigError(fmt::format("new-plugin: {} already exists; nothing was written", project.string()));
  }
  fs::create_directories(project.parent_path().empty() ? fs::path(".") : project.parent_path(), error);
  if (!fs::create_directory(project, error)) {
    throw ql::Error(fmt::format("cannot create {}: {}", project.string(), error.message()));
  }
  const std::map<std::string, std::string> summaries{
      {"problem", "a synthetic image set of horizontal bars"},
      {"topology", "a small CNN of quantisable layers"},
      {"algorithm", "per-channel rounding of weights to a b-bit grid, with a bit-depth sweep"}};
  auto render = [&](const std::string& template_name) {
    std::string text = ql::sdk_tool::templates().at(template_name);
    text = replace_all(text, "{{name}}", name);
    text = replace_all(text, "{{Class}}", class_name(name));
    text = replace_all(text, "{{kind}}", kind);
    return replace_all(text, "{{summary}}", summaries.at(kind));
  };
  write_new_file(project / "CMakeLists.txt", render("CMakeLists.txt.in"));
  write_new_file(project / (name + ".cpp"), render(kind + ".cpp.in"));
  write_new_file(project / "README.md", render("README.md.in"));
  write_new_file(project / (name + "_experiment.toml"), render("experiment_" + kind + ".toml.in"));
  fmt::print("wrote {} plugin '{}' in {}:\n  CMakeLists.txt  {}.cpp  README.md  {}_experiment.toml\n"
             "next: qlsdk build {}\n",
             kind, name, project.string(), name, name, project.string());
  return kExitOk;
}

std::string quoted(const std::string& text) { return "'" + replace_all(text, "'", "'\\''") + "'"; }

int command_build(const std::vector<std::string>& args) {
  Command command;
  command.options.add_options()("help,h", "show this help")
      ("build-dir", po::value<std::string>(), "build folder (default: DIR/build)")
      ("config", po::value<std::string>()->default_value("Release"), "CMake build type")
      ("define,D", po::value<std::vector<std::string>>()->composing(),
       "KEY=VALUE: a CMake cache entry for the plugin project (-DKEY=VALUE; repeatable)");
  command.hidden.add_options()("dir", po::value<std::string>()->default_value("."));
  command.positional.add("dir", 1);
  const po::variables_map vm = parse(args, command);
  if (vm.count("help")) {
    std::cout << "usage: qlsdk build [DIR] [--build-dir B] [--config Release|Debug] [-DKEY=VALUE ...]\n\n"
              << command.options;
    return kExitOk;
  }
  const fs::path dir = vm["dir"].as<std::string>();
  if (!fs::exists(dir / "CMakeLists.txt")) {
    throw ql::ConfigError(fmt::format("build: {} has no CMakeLists.txt (make one with qlsdk new-plugin)", dir.string()));
  }
  const fs::path build = vm.count("build-dir") ? fs::path(vm["build-dir"].as<std::string>()) : dir / "build";
  // This SDK's own installation prefix (qlsdk lives in <prefix>/bin).
  const fs::path prefix = ql::core::executable_dir().parent_path();
  const bool ninja = std::system("command -v ninja >/dev/null 2>&1") == 0;
  std::string defines;
  if (vm.count("define")) {
    for (const std::string& define : vm["define"].as<std::vector<std::string>>()) {
      const auto equals = define.find('=');
      if (equals == 0 || equals == std::string::npos) {
        throw ql::ConfigError(fmt::format("build: -D{}: expected -DKEY=VALUE", define));
      }
      defines += " " + quoted("-D" + define);
    }
  }
  const std::string configure =
      fmt::format("cmake -S {} -B {} {} -DCMAKE_BUILD_TYPE={} -DCMAKE_PREFIX_PATH={}{}", quoted(dir.string()),
                  quoted(build.string()), ninja && !fs::exists(build / "CMakeCache.txt") ? "-G Ninja" : "",
                  quoted(vm["config"].as<std::string>()), quoted(prefix.string()), defines);
  fmt::print("{}\n", configure);
  std::fflush(stdout);
  if (std::system(configure.c_str()) != 0) throw ql::Error("build: cmake could not configure the project (see above)");
  const std::string compile = fmt::format("cmake --build {}", quoted(build.string()));
  fmt::print("{}\n", compile);
  std::fflush(stdout);
  if (std::system(compile.c_str()) != 0) throw ql::Error("build: the build failed (see above)");
  std::vector<fs::path> built;
  for (const auto& entry : fs::directory_iterator(build)) {
    if (entry.path().extension() == ".so") built.push_back(entry.path());
  }
  for (const fs::path& so : built) {
    fmt::print("built {}\ninstall it: mkdir -p ~/.local/lib/quantlab/plugins && cp {} ~/.local/lib/quantlab/plugins/\n",
               so.string(), so.string());
  }
  return built.empty() ? kExitFailure : kExitOk;
}

int command_inspect(const std::vector<std::string>& args) {
  Command command;
  command.options.add_options()("help,h", "show this help");
  command.hidden.add_options()("file", po::value<std::string>());
  command.positional.add("file", 1);
  const po::variables_map vm = parse(args, command);
  if (vm.count("help") || !vm.count("file")) {
    std::cout << "usage: qlsdk inspect FILE.so\n";
    return vm.count("help") ? kExitOk : kExitUsage;
  }
  const ql::core::PluginInspection found = ql::core::inspect_plugin_file(vm["file"].as<std::string>());
  if (found.status != ql::core::PluginInspection::Status::plugin) {
    fmt::print(stderr, "refused: {}\n", found.reason);
    return kExitFailure;
  }
  const ql::core::PluginMetadata& m = found.metadata;
  fmt::print("file:        {}\nkind:        {}\nname:        {}\nversion:     {}\nabi:         {}.{} (host {}.{})\n"
             "fingerprint: {}\nsummary:     {}\noptions:\n{}",
             m.path.string(), ql::to_string(m.kind), m.name, m.version, m.abi_major, m.abi_minor, ql::kAbiMajor,
             ql::kAbiMinor, m.fingerprint, m.summary, m.default_config);
  return kExitOk;
}

int command_check(const std::vector<std::string>& args) {
  Command command;
  command.options.add_options()("help,h", "show this help")
      ("set", po::value<std::vector<std::string>>()->composing(), "change one of the plugin's options; repeatable");
  command.hidden.add_options()("file", po::value<std::string>());
  command.positional.add("file", 1);
  const po::variables_map vm = parse(args, command);
  if (vm.count("help") || !vm.count("file")) {
    std::cout << "usage: qlsdk check FILE.so [--set KEY=VALUE ...]\n\n" << command.options;
    return vm.count("help") ? kExitOk : kExitUsage;
  }
  ql::core::PluginRegistry registry({fs::path(vm["file"].as<std::string>())});
  const auto overrides = vm.count("set") ? vm["set"].as<std::vector<std::string>>() : std::vector<std::string>{};
  const ql::core::PluginMetadata& plugin = registry.plugins().at(0);
  const ql::core::ConformanceReport report = ql::core::check_conformance(registry, plugin, overrides);
  for (const std::string& line : report.lines) fmt::print("{}\n", line);
  fmt::print("{} plugin '{}': {}\n", ql::to_string(plugin.kind), plugin.name,
             report.passed() ? "all checks passed" : fmt::format("{} checks failed", report.failures));
  return report.passed() ? kExitOk : kExitFailure;
}

}  // namespace

int main(int argc, char** argv) {
  return ql::core::run_tool("qlsdk", kUsage, argc, argv,
                            {{"new-plugin", command_new_plugin},
                             {"build", command_build},
                             {"inspect", command_inspect},
                             {"check", command_check}});
}
