// The language-names problem (the PyTorch char-RNN tutorial's data): one `<Language>.txt` per
// class, one UTF-8 name per line; a name is classified into its language from its characters.
// Names become token ids (0 is padding) padded to `max_length`; the test split is drawn per
// class with a fixed seed (stratified), so it keeps the languages' proportions; the host holds
// the validation split out of the rest.
#include "quantlab/sdk/config.hpp"
#include "quantlab/sdk/error.hpp"
#include "quantlab/sdk/plugin.hpp"
#include "quantlab/sdk/problem.hpp"

#include <torch/types.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <dlfcn.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string_view>

namespace {

namespace fs = std::filesystem;

constexpr char kOptions[] = R"toml(
data_dir = ""              # folder of <Language>.txt files; "": the copy installed with QuantLab (datasets/language-names)
encoding = "ascii"         # ascii: fold to ASCII as the PyTorch tutorial (NFD, drop accents, keep letters and " .,;'"; 58 tokens) | codepoints: one token per Unicode code point (NFC, ids up to 65535, as Quantifind)
max_length = 20            # names are padded (token 0) to this many tokens; longer ones are cut (the data's longest has 20)
test_fraction = 0.1        # share of each language held out for testing (the validation split is the host's: [training] valid_fraction of the rest)
split_seed = 42            # seed of the stratified test split
)toml";

// The tutorial's alphabet: ASCII letters and " .,;'"; token id = 1 + position.
constexpr std::string_view kAsciiAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;'";
constexpr std::int64_t kCodePoints = 65536;

fs::path installed_data_dir() {
  // <prefix>/lib/quantlab/plugins/language_names.so -> <prefix>/share/quantlab/datasets/...
  Dl_info info{};
  if (dladdr(reinterpret_cast<const void*>(&installed_data_dir), &info) && info.dli_fname) {
    const fs::path installed = fs::path(info.dli_fname).parent_path() / "../../../share/quantlab/datasets/language-names";
    if (fs::is_directory(installed)) return fs::canonical(installed);
  }
  const fs::path source = QL_SOURCE_DATASETS_DIR "/language-names";
  if (fs::is_directory(source)) return source;
  throw ql::Error(fmt::format("the language-names data installed with QuantLab is missing (looked in "
                              "<prefix>/share/quantlab/datasets/language-names and {}); set problem.data_dir",
                              source.string()));
}

class Tokenizer {
 public:
  explicit Tokenizer(bool ascii) : ascii_(ascii) {
    UErrorCode status = U_ZERO_ERROR;
    normalizer_ = ascii ? icu::Normalizer2::getNFDInstance(status) : icu::Normalizer2::getNFCInstance(status);
    QL_CHECK(U_SUCCESS(status), "cannot load ICU's Unicode normalisation data: {}", u_errorName(status));
  }

  // Token ids of one UTF-8 line (empty when nothing is left after folding).
  std::vector<std::int64_t> operator()(const std::string& line, const fs::path& file, std::size_t number) const {
    const icu::UnicodeString text = icu::UnicodeString::fromUTF8(line);
    // ICU decodes invalid UTF-8 to U+FFFD; one that was not in the file means the line is broken.
    const bool replaced = text.indexOf(static_cast<UChar>(0xFFFD)) >= 0 && line.find("\xEF\xBF\xBD") == std::string::npos;
    QL_CHECK(!text.isBogus() && !replaced, "{}:{}: not valid UTF-8", file.string(), number);
    UErrorCode status = U_ZERO_ERROR;
    const icu::UnicodeString normal = normalizer_->normalize(text, status);
    QL_CHECK(U_SUCCESS(status), "{}:{}: cannot normalise: {}", file.string(), number, u_errorName(status));
    std::vector<std::int64_t> tokens;
    for (std::int32_t i = 0; i < normal.length(); i = normal.moveIndex32(i, 1)) {
      const UChar32 c = normal.char32At(i);
      if (ascii_) {
        if (u_charType(c) == U_NON_SPACING_MARK) continue;  // the accents NFD split off
        const auto at = c < 128 ? kAsciiAlphabet.find(static_cast<char>(c)) : std::string_view::npos;
        if (at != std::string_view::npos) tokens.push_back(static_cast<std::int64_t>(at) + 1);
      } else {
        QL_CHECK(c > 0 && c < kCodePoints, "{}:{}: code point U+{:X} is outside 1..U+FFFF", file.string(), number,
                 static_cast<std::uint32_t>(c));
        tokens.push_back(c);
      }
    }
    return tokens;
  }

 private:
  bool ascii_;
  const icu::Normalizer2* normalizer_ = nullptr;
};

class NameSet : public ql::Dataset {
 public:
  NameSet(at::Tensor tokens, at::Tensor labels) : tokens_(std::move(tokens)), labels_(std::move(labels)) {}
  std::int64_t size() const override { return tokens_.size(0); }
  ql::Batch get_batch(const at::Tensor& indices, std::uint64_t /*seed*/, bool /*augment*/) const override {
    ql::Batch batch;
    batch.inputs = tokens_.index_select(0, indices);
    batch.targets = labels_.index_select(0, indices);
    return batch;
  }

 private:
  at::Tensor tokens_, labels_;
};

class LanguageNames : public ql::Problem {
 public:
  explicit LanguageNames(const ql::Config& options) {
    const fs::path configured = options.get_path("data_dir");
    const fs::path dir = configured.empty() ? installed_data_dir() : configured;
    const bool ascii = options.get_choice("encoding", {"ascii", "codepoints"}) == "ascii";
    const std::int64_t length = options.get_int("max_length", 1, 4096);
    const double test_fraction = options.get_double("test_fraction", 0.0, 0.5);
    const auto seed = static_cast<std::uint64_t>(options.get_int("split_seed", 0, INT64_MAX));

    QL_CHECK(fs::is_directory(dir), "{}: not a folder of <Language>.txt files", dir.string());
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.path().extension() == ".txt" && entry.is_regular_file()) files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
    QL_CHECK(files.size() >= 2, "{}: needs at least two <Language>.txt files, found {}", dir.string(), files.size());

    const Tokenizer tokenize(ascii);
    std::vector<std::vector<std::int64_t>> names;
    std::vector<std::int64_t> labels;
    std::vector<std::vector<std::int64_t>> by_class(files.size());
    for (std::size_t c = 0; c < files.size(); ++c) {
      spec_.class_names.push_back(files[c].stem().string());
      std::ifstream in(files[c], std::ios::binary);
      QL_CHECK(in.good(), "{}: cannot open", files[c].string());
      std::string line;
      for (std::size_t number = 1; std::getline(in, line); ++number) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.empty()) continue;
        std::vector<std::int64_t> tokens = tokenize(line, files[c], number);
        if (tokens.empty()) continue;
        if (static_cast<std::int64_t>(tokens.size()) > length) tokens.resize(static_cast<std::size_t>(length));
        by_class[c].push_back(static_cast<std::int64_t>(names.size()));
        names.push_back(std::move(tokens));
        labels.push_back(static_cast<std::int64_t>(c));
      }
      QL_CHECK(!by_class[c].empty(), "{}: no names", files[c].string());
    }

    at::Tensor all_tokens = torch::zeros({static_cast<std::int64_t>(names.size()), length}, torch::kInt64);
    auto rows = all_tokens.accessor<std::int64_t, 2>();
    for (std::size_t i = 0; i < names.size(); ++i) {
      for (std::size_t t = 0; t < names[i].size(); ++t) rows[static_cast<std::int64_t>(i)][static_cast<std::int64_t>(t)] = names[i][t];
    }
    const at::Tensor all_labels = torch::tensor(labels, torch::kInt64);

    // Stratified test split: each language's names shuffled with the seed, then cut.
    std::vector<std::int64_t> train, test;
    for (std::size_t c = 0; c < by_class.size(); ++c) {
      std::vector<std::int64_t> members;
      for (std::int64_t i : ql::seeded_permutation(static_cast<std::int64_t>(by_class[c].size()), seed + c)) {
        members.push_back(by_class[c][static_cast<std::size_t>(i)]);
      }
      const auto n = static_cast<double>(members.size());
      const auto n_test = static_cast<std::size_t>(std::round(n * test_fraction));
      test.insert(test.end(), members.begin(), members.begin() + static_cast<std::ptrdiff_t>(n_test));
      train.insert(train.end(), members.begin() + static_cast<std::ptrdiff_t>(n_test), members.end());
    }
    auto subset = [&](std::vector<std::int64_t>& index) -> std::shared_ptr<const ql::Dataset> {
      if (index.empty()) return nullptr;
      std::sort(index.begin(), index.end());
      const at::Tensor i = torch::tensor(index, torch::kInt64);
      return std::make_shared<NameSet>(all_tokens.index_select(0, i), all_labels.index_select(0, i));
    };
    splits_.train = subset(train);
    splits_.test = subset(test);
    QL_CHECK(splits_.train != nullptr, "{}: no names left for training", dir.string());

    spec_.input_kind = ql::InputKind::tokens;
    spec_.input_shape = {length};
    spec_.num_classes = static_cast<std::int64_t>(files.size());
    spec_.vocabulary_size = ascii ? static_cast<std::int64_t>(kAsciiAlphabet.size()) + 1 : kCodePoints;
  }

  ql::DatasetSpec spec() const override { return spec_; }

  std::shared_ptr<const ql::Dataset> dataset(ql::Split split, ql::Log& /*log*/) override { return splits_.of(split); }

 private:
  ql::DatasetSpec spec_;
  ql::Splits splits_;
};

}  // namespace

QL_PLUGIN(problem, "language_names", "0.1.0", "classify names into 18 languages from their characters", kOptions,
          LanguageNames)
