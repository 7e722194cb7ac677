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

// The generator of the docs' sweep tables pivots a unit's variants CSV, names the unit's commit
// and host, and refuses a column the CSV lacks.
TEST(DocsTest, VariantsTableIsGeneratedFromAUnit) {
  const ql::test::TempDir unit;
  ql::test::write_text(unit.path() / "fold0/greedy_variants.csv",
                       "variant,series,bits,alphabet_scalar,loss,top1,top5,loss_ratio,top1_ratio\n"
                       "float,float,-,-,0.3,0.8960,0.99,1,1\n"
                       "gpfq 1.58 bits C=1,gpfq,1.58496,1,0.5,0.8170,0.99,1.7,0.91\n"
                       "gpfq 1.58 bits C=2,gpfq,1.58496,2,0.3,0.8843,0.99,1.1,0.98\n"
                       "msq 1.58 bits C=1,msq,1.58496,1,1.7,0.3678,0.92,5.5,0.41\n");
  ql::test::write_text(unit.path() / "unit.toml", "git_revision = \"abc123\"\nhost = \"box\"\nstarted = \"2026-12-03T07:42:36\"\n");
  const std::string table = ql::test::quoted(unit.path().string()) + " greedy --rows series,bits --columns alphabet_scalar";
  const auto result = run_script("variants_table.py", table);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("commit abc123, host box"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("float network: 89.60 %"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("| gpfq 1.58496 | 81.70 | 88.43 |"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("| msq 1.58496 | 36.78 |  |"), std::string::npos) << result.out;
  const auto refused = run_script("variants_table.py", ql::test::quoted(unit.path().string()) + " greedy --rows nope --columns bits");
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("no column 'nope'"), std::string::npos) << refused.err;
}
