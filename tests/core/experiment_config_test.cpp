// Loading experiment files: defaults merged, every key checked, errors with file:line:column.
#include "quantlab/core/experiment_config.hpp"
#include "quantlab/core/trainer.hpp"
#include "quantlab/sdk/error.hpp"
#include "support/test_support.hpp"

#include <gtest/gtest.h>

namespace fs = std::filesystem;
using ql::core::ExperimentConfig;

namespace {

class ExperimentConfigTest : public ::testing::Test {
 protected:
  ExperimentConfigTest() : registry_(std::vector<fs::path>{QL_TEST_PLUGIN_DIR}) {}

  ExperimentConfig load(const std::string& text, const std::vector<std::string>& overrides = {}) {
    ql::test::write_text(dir_ / "exp.toml", text);
    return ExperimentConfig::load(dir_ / "exp.toml", overrides, registry_);
  }

  // The message of the ConfigError that loading `text` raises.
  std::string error_of(const std::string& text, const std::vector<std::string>& overrides = {}) {
    try {
      load(text, overrides);
    } catch (const ql::ConfigError& e) {
      return e.what();
    }
    ADD_FAILURE() << "no ConfigError for:\n" << text;
    return "";
  }

  std::string file() const { return (dir_ / "exp.toml").string(); }

  ql::test::TempDir dir_;
  ql::core::PluginRegistry registry_;
};

constexpr char kMinimal[] = R"(
[problem]
plugin = "mnist"
[topology]
plugin = "mlp"
)";

}  // namespace

TEST_F(ExperimentConfigTest, DefaultsAreFilledIn) {
  const auto config = load(kMinimal);
  EXPECT_EQ(config.section("training").get_int("epochs"), 10);
  EXPECT_EQ(config.section("training").table("optimizer").get_string("name"), "adam");
  EXPECT_EQ(config.problem().name, "mnist");
  EXPECT_DOUBLE_EQ(config.section("training").get_double("valid_fraction"), 0.1);
  EXPECT_EQ(config.topology().options.get_int_list("hidden"), (std::vector<std::int64_t>{256, 128}));
  EXPECT_TRUE(config.algorithms().empty());
  const std::string resolved = config.to_toml();
  EXPECT_NE(resolved.find("[training.optimizer]"), std::string::npos) << resolved;
  EXPECT_NE(resolved.find("hold_out_seed = 1234"), std::string::npos) << resolved;
}

TEST_F(ExperimentConfigTest, UnknownKeyNamesLineColumnAndClosestName) {
  const std::string message = error_of(std::string(kMinimal) + "[training]\nepochs = 2\nbatchsize = 3\n");
  EXPECT_NE(message.find(file() + ":8:1"), std::string::npos) << message;
  EXPECT_NE(message.find("unknown key 'training.batchsize'"), std::string::npos) << message;
  EXPECT_NE(message.find("did you mean 'batch_size'"), std::string::npos) << message;
}

TEST_F(ExperimentConfigTest, UnknownPluginOptionIsCheckedAgainstThePluginDefaults) {
  const std::string message = error_of("[problem]\nplugin = \"mnist\"\n[topology]\nplugin = \"mlp\"\nhiden = [3]\n");
  EXPECT_NE(message.find(file() + ":5:1"), std::string::npos) << message;
  EXPECT_NE(message.find("topology.hiden"), std::string::npos) << message;
  EXPECT_NE(message.find("'hidden'"), std::string::npos) << message;
}

// bad-input: a value of the wrong type (`epochs = "3"`) | `exp.toml:L:C: training.epochs: expected integer, got string` | 2
TEST_F(ExperimentConfigTest, WrongTypeIsAnError) {
  const std::string message = error_of(std::string(kMinimal) + "[training]\nepochs = \"ten\"\n");
  EXPECT_NE(message.find(file() + ":7:10"), std::string::npos) << message;
  EXPECT_NE(message.find("expected integer, got string"), std::string::npos) << message;
}

// bad-input: an array with an element of the wrong type | `… expected an array of integer …` | 2
TEST_F(ExperimentConfigTest, WrongArrayElementTypeIsAnError) {
  const std::string message = error_of("[problem]\nplugin = \"mnist\"\n[topology]\nplugin = \"mlp\"\nhidden = [64, \"x\"]\n");
  EXPECT_NE(message.find(file() + ":5:15"), std::string::npos) << message;
  EXPECT_NE(message.find("expected an array of integer"), std::string::npos) << message;
}

TEST_F(ExperimentConfigTest, IntegerIsAcceptedForAFloatOption) {
  const auto config = load(std::string(kMinimal) + "[training.optimizer]\nlr = 1\n");
  EXPECT_DOUBLE_EQ(config.section("training").table("optimizer").get_double("lr"), 1.0);
}

// bad-input: an unknown plugin name | `no problem plugin named 'mnst' (did you mean 'mnist'?); available: …` | 2
TEST_F(ExperimentConfigTest, UnknownPluginSuggestsTheClosestName) {
  const std::string message = error_of("[problem]\nplugin = \"mnst\"\n[topology]\nplugin = \"mlp\"\n");
  EXPECT_NE(message.find(file() + ":2:10"), std::string::npos) << message;
  EXPECT_NE(message.find("did you mean 'mnist'"), std::string::npos) << message;
}

// bad-input: an unknown section | `unknown section 'trainig' (did you mean 'training'?)` | 2
TEST_F(ExperimentConfigTest, UnknownSectionIsAnError) {
  const std::string message = error_of(std::string(kMinimal) + "[trainig]\nepochs = 1\n");
  EXPECT_NE(message.find("unknown section 'trainig'"), std::string::npos) << message;
  EXPECT_NE(message.find("did you mean 'training'"), std::string::npos) << message;
}

// bad-input: no `[problem]` section | `missing [problem]` | 2
TEST_F(ExperimentConfigTest, MissingProblemIsAnError) {
  const std::string message = error_of("[topology]\nplugin = \"mlp\"\n");
  EXPECT_NE(message.find("missing [problem]"), std::string::npos) << message;
}

TEST_F(ExperimentConfigTest, MalformedTomlNamesLineAndColumn) {
  const std::string message = error_of("[problem]\nplugin = \"mnist\n");
  EXPECT_NE(message.find(file() + ":2:"), std::string::npos) << message;
}

// bad-input: a host value out of range (`batch_size = 0`) | `training.batch_size: expected an integer in [1, …], got 0` | 2
TEST_F(ExperimentConfigTest, OutOfRangeValueNamesTheKeyAndRange) {
  const auto config = load(std::string(kMinimal) + "[training]\nbatch_size = 0\n");
  try {
    ql::core::TrainingSettings::from(config.section("training"));
    FAIL() << "expected a ConfigError";
  } catch (const ql::ConfigError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(file() + ":7:14"), std::string::npos) << message;
    EXPECT_NE(message.find("training.batch_size: expected an integer in [1,"), std::string::npos) << message;
  }
}

TEST_F(ExperimentConfigTest, OverridesReplaceAndAddValues) {
  const auto config = load(std::string(kMinimal) + "[[algorithm]]\nplugin = \"uniform\"\nbits = 6\n",
                           {"training.epochs=3", "algorithm.uniform.bits=4", "algorithm.0.scheme=symmetric",
                            "problem.data_dir=/some/where", "training.optimizer.name=\"sgd\""});
  EXPECT_EQ(config.section("training").get_int("epochs"), 3);
  EXPECT_EQ(config.section("training").table("optimizer").get_string("name"), "sgd");
  ASSERT_EQ(config.algorithms().size(), 1u);
  EXPECT_EQ(config.algorithms()[0].options.get_int("bits"), 4);
  EXPECT_EQ(config.algorithms()[0].options.get_string("scheme"), "symmetric");
  EXPECT_EQ(config.problem().options.get_string("data_dir"), "/some/where");
}

// bad-input: `--set` of an unknown key | `--set training.epoch=3: unknown key … (did you mean 'epochs'?)` | 2
TEST_F(ExperimentConfigTest, OverrideOfAnUnknownKeyIsAnError) {
  const std::string message = error_of(kMinimal, {"training.epoch=3"});
  EXPECT_NE(message.find("--set training.epoch=3"), std::string::npos) << message;
  EXPECT_NE(message.find("did you mean 'epochs'"), std::string::npos) << message;
}

// bad-input: `--set` without a value | `… expected KEY=VALUE` | 2
TEST_F(ExperimentConfigTest, OverrideWithoutValueIsAnError) {
  EXPECT_NE(error_of(kMinimal, {"training.epochs"}).find("expected KEY=VALUE"), std::string::npos);
}

TEST_F(ExperimentConfigTest, ValueFromDefaultsNamesItsOrigin) {
  const auto config = load(kMinimal);
  EXPECT_NE(config.problem().options.where("data_dir").find("<defaults of problem plugin 'mnist'>"),
            std::string::npos);
}

TEST_F(ExperimentConfigTest, EveryExampleLoads) {
  for (const auto& entry : fs::directory_iterator(fs::path(QL_TEST_SOURCE_DIR) / "examples")) {
    if (entry.path().extension() != ".toml") continue;
    SCOPED_TRACE(entry.path().string());
    const auto config = ExperimentConfig::load(entry.path(), {}, registry_);
    EXPECT_NO_THROW(ql::core::TrainingSettings::from(config.section("training")));
  }
}
