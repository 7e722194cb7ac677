// Documentation stays in step with the code and points only into the repository.
#include "support/test_support.hpp"

#include <fmt/format.h>
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
  const auto two = run_script("variants_table.py", ql::test::quoted(unit.path().string()) +
                                                      " greedy --rows series --columns alphabet_scalar --values top1,loss_ratio");
  ASSERT_EQ(two.exit_code, 0) << two.err;
  EXPECT_NE(two.out.find("| gpfq loss_ratio | 1.7 | 1.1 |"), std::string::npos) << two.out;
  const auto refused = run_script("variants_table.py", ql::test::quoted(unit.path().string()) + " greedy --rows nope --columns bits");
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("no column 'nope'"), std::string::npos) << refused.err;
}

// Every results table in the docs says where its numbers come from, and the check finds one
// that does not.
TEST(DocsTest, EveryResultsTableNamesItsCommandOrSource) {
  const auto result = run_script("check_tables.py", ql::test::quoted(QL_TEST_SOURCE_DIR));
  EXPECT_EQ(result.exit_code, 0) << result.out << result.err;

  const ql::test::TempDir dir;
  const std::string table = "| bits | top-1 |\n| --- | ---: |\n| 2 | 33.77 % |\n";
  ql::test::write_text(dir.path() / "bare.md", "# x\n\nSome text.\n\n" + table);
  ql::test::write_text(dir.path() / "named.md", "Reproduce: `make demo` (abc123, vm)\n\n" + table);
  ql::test::write_text(dir.path() / "transcript.md", "```\n" + table + "```\n");
  const auto bare = run_script("check_tables.py", ql::test::quoted((dir.path() / "bare.md").string()));
  EXPECT_EQ(bare.exit_code, 1);
  EXPECT_NE(bare.out.find("bare.md:5: a results table without"), std::string::npos) << bare.out;
  for (const char* fine : {"named.md", "transcript.md"}) {
    EXPECT_EQ(run_script("check_tables.py", ql::test::quoted((dir.path() / fine).string())).exit_code, 0) << fine;
  }
}

// The critical-ratio table from a trained unit and a sweep of units made from it.
TEST(DocsTest, CriticalRatioTableReadsUnitsAndSweeps) {
  const ql::test::TempDir dir;
  auto unit = [&](const std::string& name, double ratio2) {
    ql::test::write_text(dir.path() / name / "unit.toml",
                         "experiment = \"examples/quantifind/dense_mnist.toml\"\ngit_revision = \"abc123\"\n"
                         "host = \"box\"\nstarted = \"2026-12-03T07:42:36\"\n");
    ql::test::write_text(dir.path() / name / "fold0/uniform_variants.csv",
                         fmt::format("variant,bits,loss,top1,top5,loss_ratio,top1_ratio\nfloat,-,0.3,0.9,0.99,1.0000,1.0\n"
                                     "2 bits,2,0.6,0.5,0.9,{:.4f},0.5\n3 bits,3,0.31,0.89,0.99,1.0100,0.99\n",
                                     ratio2));
    return (dir.path() / name).string();
  };
  const std::string trained = unit("exp0001", 2.0);
  const std::string swept = unit("exp0002", 1.5);
  ql::test::write_text(dir.path() / "sweep0001/sweep.toml",
                       fmt::format("set = [\"algorithm.0.parameters=\\\"weights\\\"\"]\n[[run]]\nindex = 0\n"
                                   "overrides = [\"algorithm.0.layers=[ \\\"fc*\\\" ]\"]\nunit = \"{}\"\n",
                                   swept));
  const auto result = run_script("critical_ratio_table.py", ql::test::quoted(trained) + " " +
                                                               ql::test::quoted((dir.path() / "sweep0001").string()));
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("units: commit abc123; host box"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("| dense_mnist | every parameter (trained unit) | 2.000 | 1.010 | 0.3000 |"), std::string::npos)
      << result.out;
  EXPECT_NE(result.out.find("| dense_mnist | weights of layers=[ \"fc*\" ] | 1.500 | 1.010 | 0.3000 |"), std::string::npos)
      << result.out;
  const auto missing = run_script("critical_ratio_table.py", ql::test::quoted((dir.path() / "nothing").string()));
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("neither a results unit"), std::string::npos) << missing.err;
}
