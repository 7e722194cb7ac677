// Documentation generated from the code stays in step with it.
#include "support/test_support.hpp"

#include <gtest/gtest.h>

TEST(DocsTest, ReadmeBadInputTableMatchesTheTests) {
  const auto result = ql::test::run_command(
      "/usr/bin/python3 " + ql::test::quoted(QL_TEST_SOURCE_DIR "/tools/docs/bad_input_table.py") + " --check " +
      ql::test::quoted(QL_TEST_SOURCE_DIR "/README.md"));
  EXPECT_EQ(result.exit_code, 0) << result.err;
}

TEST(DocsTest, BadInputTableHasARowPerTestedKindOfBadInput) {
  const auto result = ql::test::run_command(
      "/usr/bin/python3 " + ql::test::quoted(QL_TEST_SOURCE_DIR "/tools/docs/bad_input_table.py"));
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_GE(std::count(result.out.begin(), result.out.end(), '\n'), 2 + 25) << result.out;
}
