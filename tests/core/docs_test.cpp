// Documentation stays in step with the code and points only into the repository.
#include "support/test_support.hpp"

#include <gtest/gtest.h>

namespace {

ql::test::CommandResult run_script(const std::string& script, const std::string& arguments = {}) {
  return ql::test::run_command("/usr/bin/python3 " + ql::test::quoted(QL_TEST_SOURCE_DIR "/tools/docs/" + script) +
                               (arguments.empty() ? "" : " " + arguments));
}

}  // namespace

TEST(DocsTest, BadInputTableMatchesTheTests) {
  const auto result = run_script("bad_input_table.py", "--check " + ql::test::quoted(QL_TEST_SOURCE_DIR "/docs/bad-input.md"));
  EXPECT_EQ(result.exit_code, 0) << result.err;
}

TEST(DocsTest, BadInputTableHasARowPerTestedKindOfBadInput) {
  const auto result = run_script("bad_input_table.py");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_GE(std::count(result.out.begin(), result.out.end(), '\n'), 2 + 25) << result.out;
}

// Every relative link in a Markdown file names something in the repository, and nothing cites
// a document kept outside it.
TEST(DocsTest, EveryRelativeLinkPointsIntoTheRepository) {
  const auto result = run_script("check_links.py", ql::test::quoted(QL_TEST_SOURCE_DIR));
  EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
}

// The checker itself: a broken link, a missing anchor and a citation of an outside document are
// each reported.
TEST(DocsTest, TheLinkCheckerFindsBrokenLinks) {
  const ql::test::TempDir dir;
  ql::test::write_text(dir.path() / "a.md", "# Title\n\n[ok](a.md#title) [gone](missing.md) [anchor](a.md#nope)\n");
  ql::test::write_text(dir.path() / "b.cpp", "// see ../sha" "red/design/ALGO" "RITHMS.md\n");
  const auto result = run_script("check_links.py", ql::test::quoted(dir.path().string()));
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.out.find("a.md:3: link to missing.md"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("no heading 'nope'"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("b.cpp:1: cites a document outside"), std::string::npos) << result.out;
  EXPECT_EQ(result.out.find("link to a.md#title"), std::string::npos) << result.out;
}
