// The language-names problem: a names folder in the official format, exact tokens and labels,
// the stratified split, ASCII folding as the tutorial, code points, bad files.
#include "quantlab/core/conformance.hpp"
#include "quantlab/core/experiment_config.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/problem.hpp"
#include "support/test_support.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/types.h>

namespace fs = std::filesystem;

namespace {

class LanguageNamesTest : public ::testing::Test {
 protected:
  LanguageNamesTest() : registry_(std::vector<fs::path>{QL_TEST_PLUGIN_DIR}) {
    std::string german, french;
    for (int i = 0; i < 20; ++i) german += fmt::format("Müller{}\n", std::string(static_cast<std::size_t>(i % 3), 'x'));
    for (int i = 0; i < 10; ++i) french += "Éloïse\n";
    ql::test::write_text(dir_ / "names/German.txt", german);
    ql::test::write_text(dir_ / "names/French.txt", french);
  }

  ql::core::PluginPtr<ql::Problem> problem(std::vector<std::string> options) {
    options.push_back("data_dir=" + (dir_ / "names").string());
    return registry_.create<ql::Problem>(
        "language_names",
        ql::core::plugin_options(registry_.find(ql::PluginKind::problem, "language_names"), options));
  }

  static at::Tensor all(const ql::Dataset& data, at::Tensor* targets = nullptr) {
    const ql::Batch batch = data.get_batch(torch::arange(data.size(), torch::kInt64), 0, false);
    if (targets) *targets = batch.targets;
    return batch.inputs;
  }

  ql::test::TempDir dir_;
  ql::core::PluginRegistry registry_;
};

// Token of an ASCII character in the tutorial's alphabet.
std::int64_t token(char c) {
  const std::string alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;'";
  return static_cast<std::int64_t>(alphabet.find(c)) + 1;
}

}  // namespace

TEST_F(LanguageNamesTest, FoldsToAsciiPadsAndLabelsByFileName) {
  auto names = problem({"max_length=8", "test_fraction=0.0"});
  const ql::DatasetSpec spec = names->spec();
  EXPECT_EQ(spec.input_kind, ql::InputKind::tokens);
  EXPECT_EQ(spec.input_shape, (std::vector<std::int64_t>{8}));
  EXPECT_EQ(spec.vocabulary_size, 58);
  EXPECT_EQ(spec.class_names, (std::vector<std::string>{"French", "German"}));  // sorted file names
  at::Tensor labels;
  const at::Tensor tokens = all(*names->dataset(ql::Split::train, ql::stderr_log()), &labels);
  ASSERT_EQ(tokens.sizes(), (std::vector<std::int64_t>{30, 8}));
  // "Éloïse" -> "Eloise" (NFD, accents dropped), padded with 0; the French file comes first.
  const std::vector<std::int64_t> eloise{token('E'), token('l'), token('o'), token('i'), token('s'), token('e'), 0, 0};
  EXPECT_TRUE(tokens[0].equal(torch::tensor(eloise, torch::kInt64))) << tokens[0];
  EXPECT_EQ(labels[0].item<std::int64_t>(), 0);
  // "Müllerxx" -> "Mullerxx": exactly 8 tokens, no padding.
  const std::vector<std::int64_t> muller{token('M'), token('u'), token('l'), token('l'),
                                         token('e'), token('r'), token('x'), token('x')};
  bool found = false;
  for (std::int64_t i = 0; i < tokens.size(0); ++i) found |= tokens[i].equal(torch::tensor(muller, torch::kInt64));
  EXPECT_TRUE(found);
  EXPECT_EQ(labels.eq(1).sum().item<std::int64_t>(), 20);
  const ql::Batch batch = names->dataset(ql::Split::train, ql::stderr_log())->get_batch(torch::tensor({0}, torch::kInt64), 0, false);
  EXPECT_TRUE(batch.inputs.equal(torch::tensor(eloise, torch::kInt64).unsqueeze(0)));  // padded with 0
}

TEST_F(LanguageNamesTest, CodePointsKeepTheLetters) {
  auto names = problem({"encoding=\"codepoints\"", "test_fraction=0.0"});
  EXPECT_EQ(names->spec().vocabulary_size, 65536);
  const at::Tensor tokens = all(*names->dataset(ql::Split::train, ql::stderr_log()));
  EXPECT_EQ(tokens[0][0].item<std::int64_t>(), 0xC9);  // É (NFC)
  EXPECT_EQ(tokens[0][3].item<std::int64_t>(), 0xEF);  // ï
}

TEST_F(LanguageNamesTest, TestSplitIsStratifiedDisjointAndSeeded) {
  auto names = problem({"test_fraction=0.1"});
  at::Tensor train_labels, test_labels;
  all(*names->dataset(ql::Split::train, ql::stderr_log()), &train_labels);
  all(*names->dataset(ql::Split::test, ql::stderr_log()), &test_labels);
  EXPECT_EQ(names->dataset(ql::Split::valid, ql::stderr_log()), nullptr);  // the host's to hold out
  // German 20: 2 test, 18 train; French 10: 1 test, 9 train.
  EXPECT_EQ(test_labels.eq(1).sum().item<std::int64_t>(), 2);
  EXPECT_EQ(test_labels.eq(0).sum().item<std::int64_t>(), 1);
  EXPECT_EQ(train_labels.size(0), 27);
  auto again = problem({"test_fraction=0.1"});
  EXPECT_TRUE(all(*again->dataset(ql::Split::test, ql::stderr_log())).equal(all(*names->dataset(ql::Split::test, ql::stderr_log()))));
  auto other = problem({"test_fraction=0.1", "split_seed=7"});
  EXPECT_FALSE(all(*other->dataset(ql::Split::test, ql::stderr_log())).equal(all(*names->dataset(ql::Split::test, ql::stderr_log()))));
}

// bad-input: a names file with invalid UTF-8 | `…/Broken.txt:2: not valid UTF-8` | 1
TEST_F(LanguageNamesTest, InvalidUtf8NamesTheFileAndLine) {
  ql::test::write_text(dir_ / "names/Broken.txt", "Good\nBa\xff" "d\n");
  try {
    problem({});
    FAIL() << "expected an error";
  } catch (const ql::Error& e) {
    EXPECT_NE(std::string(e.what()).find("Broken.txt:2: not valid UTF-8"), std::string::npos) << e.what();
  }
}

// bad-input: a names folder that does not exist | an error naming the folder | 1
TEST_F(LanguageNamesTest, MissingFolderIsAnError) {
  EXPECT_THROW(registry_.create<ql::Problem>("language_names",
                                            ql::core::plugin_options(registry_.find(ql::PluginKind::problem, "language_names"),
                                                                     {"data_dir=/nonexistent"})),
               ql::Error);
}

TEST_F(LanguageNamesTest, InstalledDataHasTheTutorialsCountsAndPassesConformance) {
  auto names = registry_.create<ql::Problem>(
      "language_names", ql::core::plugin_options(registry_.find(ql::PluginKind::problem, "language_names"), {}));
  EXPECT_EQ(names->spec().num_classes, 18);
  const std::int64_t total =
      names->dataset(ql::Split::train, ql::stderr_log())->size() + names->dataset(ql::Split::test, ql::stderr_log())->size();
  EXPECT_EQ(total, 20074);
  const auto report =
      ql::core::check_conformance(registry_, registry_.find(ql::PluginKind::problem, "language_names"), {});
  EXPECT_TRUE(report.passed()) << fmt::format("{}", fmt::join(report.lines, "\n"));
}
