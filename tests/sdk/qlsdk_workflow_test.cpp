// A plugin author's whole path, outside the source tree: install QuantLab to a prefix,
// scaffold one plugin of each kind, build them against the installed SDK, check them, drop
// them into a plugin folder and run an experiment that uses all three.
#include "support/test_support.hpp"

#include <gtest/gtest.h>

#include <fstream>

namespace fs = std::filesystem;
using ql::test::quoted;
using ql::test::run_command;

namespace {

class QlsdkWorkflowTest : public ::testing::Test {
 protected:
  QlsdkWorkflowTest() {
    const auto installed = run_command("cmake --install " + quoted(QL_TEST_BUILD_DIR) + " --prefix " +
                                       quoted((dir_ / "prefix").string()));
    EXPECT_EQ(installed.exit_code, 0) << installed.out << installed.err;
  }

  // Runs an installed tool with HOME inside the test folder (no user plugins).
  ql::test::CommandResult tool(const std::string& name, const std::string& args) const {
    return run_command("cd " + quoted(dir_.path().string()) + " && HOME=" + quoted(dir_.path().string()) +
                       " QL_PLUGIN_PATH= " + quoted((dir_ / "prefix/bin" / name).string()) + " " + args);
  }

  // new-plugin + build; returns the built .so.
  fs::path scaffold_and_build(const std::string& name, const std::string& kind,
                              const std::string& extra_cmake = "") {
    const auto made = tool("qlsdk", "new-plugin " + name + " --kind " + kind + " --dir src");
    EXPECT_EQ(made.exit_code, 0) << made.err;
    for (const char* file : {"CMakeLists.txt", "README.md"}) EXPECT_TRUE(fs::exists(dir_ / "src" / name / file));
    EXPECT_TRUE(fs::exists(dir_ / "src" / name / (name + ".cpp")));
    EXPECT_TRUE(fs::exists(dir_ / "src" / name / (name + "_experiment.toml")));
    if (!extra_cmake.empty()) std::ofstream(dir_ / "src" / name / "CMakeLists.txt", std::ios::app) << extra_cmake;
    // -D options reach the plugin project's CMake cache.
    const auto built = tool("qlsdk", "build src/" + name + " -DQL_WORKFLOW_MARK=kept");
    EXPECT_EQ(built.exit_code, 0) << built.out << built.err;
    EXPECT_NE(ql::test::read_text(dir_ / "src" / name / "build" / "CMakeCache.txt").find("QL_WORKFLOW_MARK:UNINITIALIZED=kept"),
              std::string::npos);
    EXPECT_EQ(built.out.find("warning:"), std::string::npos) << "the generated code must build without warnings:\n"
                                                             << built.out;
    EXPECT_NE(built.out.find("install it:"), std::string::npos) << built.out;
    return dir_ / "src" / name / "build" / (name + ".so");
  }

  ql::test::TempDir dir_;
};

}  // namespace

TEST_F(QlsdkWorkflowTest, ScaffoldedPluginsOfEveryKindBuildCheckAndRunTogether) {
  fs::create_directories(dir_ / "plugins");
  for (const char* kind : {"problem", "topology", "algorithm"}) {
    const std::string name = std::string("my_") + kind;
    const fs::path so = scaffold_and_build(name, kind);
    ASSERT_TRUE(fs::exists(so)) << so;
    const auto inspected = tool("qlsdk", "inspect " + quoted(so.string()));
    EXPECT_EQ(inspected.exit_code, 0) << inspected.err;
    EXPECT_NE(inspected.out.find(std::string("kind:        ") + kind), std::string::npos) << inspected.out;
    const auto checked = tool("qlsdk", "check " + quoted(so.string()));
    EXPECT_EQ(checked.exit_code, 0) << checked.out << checked.err;
    EXPECT_NE(checked.out.find("all checks passed"), std::string::npos) << checked.out;
    fs::copy_file(so, dir_ / "plugins" / so.filename());
  }
  ql::test::write_text(dir_ / "all.toml", R"([storage]
logs = "logs"
[problem]
plugin = "my_problem"
[topology]
plugin = "my_topology"
[training]
epochs = 2
batch_size = 32
[[algorithm]]
plugin = "my_algorithm"
max_bits = 4
)");
  const auto listed = tool("qlhost", "plugins --plugin-dir plugins");
  EXPECT_NE(listed.out.find(dir_ / "plugins/my_topology.so"), std::string::npos) << listed.out;
  EXPECT_NE(listed.out.find(dir_ / "prefix/lib/quantlab/plugins/mnist.so"), std::string::npos) << listed.out;
  const auto ran = tool("qlhost", "run all.toml --plugin-dir plugins");
  ASSERT_EQ(ran.exit_code, 0) << ran.out << ran.err;
  const fs::path unit = dir_ / "logs/my_problem/my_topology/exp0001";
  EXPECT_TRUE(fs::exists(unit / "config.toml"));
  EXPECT_TRUE(fs::exists(unit / "fold0/my_algorithm_variants.csv"));
  EXPECT_TRUE(fs::exists(unit / "fold0/checkpoints/result.pt"));

  // The user plugin directory works as well as --plugin-dir.
  fs::create_directories(dir_ / ".local/lib/quantlab");
  fs::rename(dir_ / "plugins", dir_ / ".local/lib/quantlab/plugins");
  EXPECT_EQ(tool("qlhost", "run all.toml").exit_code, 0);
  EXPECT_TRUE(fs::exists(dir_ / "logs/my_problem/my_topology/exp0002/config.toml"));
}

TEST_F(QlsdkWorkflowTest, PluginWithAnotherFingerprintIsRefusedNamingTheField) {
  const fs::path so = scaffold_and_build(
      "fake_algorithm", "algorithm",
      "target_compile_definitions(ql_plugin_fake_algorithm PRIVATE QL_COMPILER_ID=\"gcc-0.0\")\n");
  ASSERT_TRUE(fs::exists(so));
  const auto inspected = tool("qlsdk", "inspect " + quoted(so.string()));
  EXPECT_EQ(inspected.exit_code, 1);
  EXPECT_NE(inspected.err.find("compiler: expected gcc-"), std::string::npos) << inspected.err;
  EXPECT_NE(inspected.err.find("found gcc-0.0"), std::string::npos) << inspected.err;

  fs::create_directories(dir_ / "plugins");
  fs::copy_file(so, dir_ / "plugins/fake_algorithm.so");
  const auto listed = tool("qlhost", "plugins --plugin-dir plugins");
  EXPECT_EQ(listed.exit_code, 0);
  EXPECT_EQ(listed.out.find("fake_algorithm"), std::string::npos) << listed.out;
  EXPECT_NE(listed.err.find("compiler: expected gcc-"), std::string::npos) << listed.err;

  ql::test::write_text(dir_ / "fake.toml", "[problem]\nplugin = \"mnist\"\n[topology]\nplugin = \"mlp\"\n"
                                           "[[algorithm]]\nplugin = \"fake_algorithm\"\n");
  const auto ran = tool("qlhost", "run fake.toml --plugin-dir plugins");
  EXPECT_EQ(ran.exit_code, 2);
  EXPECT_NE(ran.err.find("qlhost: error: "), std::string::npos) << ran.err;
  EXPECT_NE(ran.err.find("cannot be used"), std::string::npos) << ran.err;
  EXPECT_NE(ran.err.find("compiler: expected"), std::string::npos) << ran.err;
}

TEST_F(QlsdkWorkflowTest, NewPluginValidatesTheNameAndNeverOverwrites) {
  EXPECT_EQ(tool("qlsdk", "new-plugin 9lives --kind problem").exit_code, 2);
  EXPECT_EQ(tool("qlsdk", "new-plugin 'has space' --kind problem").exit_code, 2);
  EXPECT_EQ(tool("qlsdk", "new-plugin ok --kind network").exit_code, 2);
  EXPECT_EQ(tool("qlsdk", "new-plugin ok").exit_code, 2);
  fs::create_directories(dir_ / "taken");
  ql::test::write_text(dir_ / "taken/mine.txt", "keep me");
  const auto again = tool("qlsdk", "new-plugin taken --kind algorithm");
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_NE(again.err.find("already exists"), std::string::npos) << again.err;
  EXPECT_EQ(ql::test::read_text(dir_ / "taken/mine.txt"), "keep me");
  EXPECT_FALSE(fs::exists(dir_ / "taken/CMakeLists.txt"));
  const auto refused = tool("qlsdk", "inspect " + quoted((dir_ / "taken/mine.txt").string()));
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("not an ELF file"), std::string::npos) << refused.err;
}
