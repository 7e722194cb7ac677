// The loader table: every kind of file a plugin directory may hold, and what the host does.
#include "quantlab/core/plugin_file.hpp"
#include "quantlab/core/plugin_registry.hpp"
#include "quantlab/sdk/algorithm.hpp"
#include "quantlab/sdk/error.hpp"
#include "support/test_support.hpp"

#include <gtest/gtest.h>

#include <elf.h>
#include <unistd.h>

namespace fs = std::filesystem;
using ql::core::PluginInspection;
using ql::core::PluginRegistry;
using Status = ql::core::PluginInspection::Status;

namespace {

fs::path fixture(const std::string& name) {
  return fs::path(QL_TEST_FIXTURE_DIR) / name / (name == "no_entry" ? "fixture_no_entry.so"
                                                                     : "fixture_" + name + ".so");
}

std::vector<fs::path> only(const fs::path& dir) { return {dir}; }

}  // namespace

TEST(PluginLoaderTest, GoodPluginIsReadWithoutLoading) {
  const PluginInspection found = ql::core::inspect_plugin_file(fixture("good"));
  ASSERT_EQ(found.status, Status::plugin) << found.reason;
  EXPECT_EQ(found.metadata.name, "fixture_good");
  EXPECT_EQ(found.metadata.version, "1.2.3");
  EXPECT_EQ(found.metadata.kind, ql::PluginKind::algorithm);
  EXPECT_EQ(found.metadata.fingerprint, ql::build_fingerprint());
  EXPECT_NE(found.metadata.default_config.find("value = 1"), std::string::npos);
  // QL_PLUGIN writes the ABI the SDK defines, whatever its numbers are.
  EXPECT_EQ(found.metadata.abi_major, ql::kAbiMajor);
  EXPECT_EQ(found.metadata.abi_minor, ql::kAbiMinor);
}

TEST(PluginLoaderTest, GoodPluginLoadsAndCreatesItsObject) {
  PluginRegistry registry(only(fixture("good").parent_path()));
  ASSERT_EQ(registry.plugins().size(), 1u);
  auto algorithm = registry.create<ql::Algorithm>("fixture_good", ql::test::config_from_toml("value = 7"));
  ASSERT_NE(algorithm, nullptr);
  const auto variants = algorithm->variants();
  ASSERT_EQ(variants.size(), 1u);
  EXPECT_EQ(variants[0].values[0].second, 7.0);
}

TEST(PluginLoaderTest, BadOptionsBecomeConfigErrorsNamingThePlugin) {
  PluginRegistry registry(only(fixture("good").parent_path()));
  try {
    (void)registry.create<ql::Algorithm>("fixture_good", ql::test::config_from_toml("value = 1000"));
    FAIL() << "expected a ConfigError";
  } catch (const ql::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("fixture_good"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[0, 100]"), std::string::npos) << e.what();
  }
}

// bad-input: a plugin built for another plugin ABI | refused without being loaded: `… ABI 6.0 … host ABI 5.0`; naming it in an experiment: `cannot be used: …` | 2
TEST(PluginLoaderTest, WrongAbiMajorIsRefusedWithBothVersions) {
  const PluginInspection found = ql::core::inspect_plugin_file(fixture("abi_major"));
  EXPECT_EQ(found.status, Status::refused);
  EXPECT_NE(found.reason.find("ABI 6.0"), std::string::npos) << found.reason;
  EXPECT_NE(found.reason.find("host ABI 5.0"), std::string::npos) << found.reason;
  EXPECT_NE(found.reason.find(fixture("abi_major").string()), std::string::npos) << found.reason;
}

TEST(PluginLoaderTest, NewerAbiMinorIsRefused) {
  const PluginInspection found = ql::core::inspect_plugin_file(fixture("abi_minor"));
  EXPECT_EQ(found.status, Status::refused);
  EXPECT_NE(found.reason.find("5.99 is newer"), std::string::npos) << found.reason;
}

TEST(PluginLoaderTest, OlderAbiMinorIsAccepted) {
  const PluginInspection found =
      ql::core::inspect_plugin_file(fixture("good"), ql::kAbiMajor, ql::kAbiMinor + 3, ql::build_fingerprint());
  EXPECT_EQ(found.status, Status::plugin) << found.reason;
}

// bad-input: a plugin built with another compiler, C++ ABI, LibTorch or SDK | refused, the differing fields first: `compiler: expected gcc-12.2, found …` | 2
TEST(PluginLoaderTest, WrongFingerprintNamesTheDifferingFieldsFirst) {
  const PluginInspection found = ql::core::inspect_plugin_file(fixture("fingerprint"));
  EXPECT_EQ(found.status, Status::refused);
  const auto compiler = found.reason.find("compiler: expected");
  const auto abi = found.reason.find("cxx11abi: expected");
  const auto full = found.reason.find("expected fingerprint");
  EXPECT_NE(compiler, std::string::npos) << found.reason;
  EXPECT_NE(abi, std::string::npos) << found.reason;
  EXPECT_LT(compiler, full);
  EXPECT_EQ(found.reason.find("torch:"), std::string::npos) << "torch matched: " << found.reason;
}

// bad-input: a plugin built against another LibTorch version or device flavour (Debian's 1.13, CPU) | refused before loading: `torch: expected 2.11.0, found 1.13.1; device: expected cuda, found cpu` | 2
TEST(PluginLoaderTest, APluginOfAnotherLibTorchOrDeviceFlavourIsRefusedNamingTheFields) {
  const PluginInspection found = ql::core::inspect_plugin_file(fixture("old_torch"));
  EXPECT_EQ(found.status, Status::refused);
  EXPECT_NE(found.reason.find("torch: expected " QL_TORCH_VERSION ", found 1.13.1"), std::string::npos) << found.reason;
  if (std::string(QL_DEVICE_KIND) != "cpu") {
    EXPECT_NE(found.reason.find("device: expected " QL_DEVICE_KIND ", found cpu"), std::string::npos) << found.reason;
  }
  EXPECT_EQ(found.reason.find("compiler:"), std::string::npos) << "the compiler matched: " << found.reason;
}

// bad-input: a shared object that is not a plugin | `… no 'ql_plugin_v1' symbol` (its code never runs) | 2
TEST(PluginLoaderTest, SharedObjectWithoutEntrySymbolIsNotAPlugin) {
  const PluginInspection found = ql::core::inspect_plugin_file(fixture("no_entry"));
  EXPECT_EQ(found.status, Status::not_plugin);
  EXPECT_NE(found.reason.find("no 'ql_plugin_v1' symbol"), std::string::npos) << found.reason;
}

// bad-input: a file that is not ELF given as a plugin | `… not an ELF file` | 2
TEST(PluginLoaderTest, NonElfFileIsNotAPlugin) {
  ql::test::TempDir dir;
  ql::test::write_text(dir / "x.so", "this is a text file\n");
  const PluginInspection found = ql::core::inspect_plugin_file(dir / "x.so");
  EXPECT_EQ(found.status, Status::not_plugin);
  EXPECT_NE(found.reason.find("not an ELF file"), std::string::npos) << found.reason;
}

// bad-input: a truncated plugin file | `… truncated …`, no crash | 2
TEST(PluginLoaderTest, TruncatedPluginIsRefused) {
  ql::test::TempDir dir;
  auto bytes = ql::test::read_bytes(fixture("good"));
  for (std::size_t keep : {std::size_t{10}, sizeof(Elf64_Ehdr) - 1, bytes.size() / 2, bytes.size() - 1}) {
    ql::test::write_bytes(dir / "cut.so", std::vector<std::uint8_t>(bytes.begin(), bytes.begin() + keep));
    const PluginInspection found = ql::core::inspect_plugin_file(dir / "cut.so");
    EXPECT_EQ(found.status, Status::refused) << keep << " bytes";
    EXPECT_NE(found.reason.find("truncated"), std::string::npos) << found.reason;
  }
}

// bad-input: a plugin with a corrupt ELF section table | refused with the reason, no crash | 2
TEST(PluginLoaderTest, CorruptSectionTableIsRefusedWithoutCrashing) {
  ql::test::TempDir dir;
  const auto bytes = ql::test::read_bytes(fixture("good"));
  Elf64_Ehdr header;
  std::memcpy(&header, bytes.data(), sizeof(header));
  // Garbage over every section header, then over the section name table offset.
  auto corrupt = bytes;
  for (std::size_t i = header.e_shoff; i < corrupt.size(); ++i) corrupt[i] = static_cast<std::uint8_t>(i * 131);
  ql::test::write_bytes(dir / "corrupt.so", corrupt);
  PluginInspection found = ql::core::inspect_plugin_file(dir / "corrupt.so");
  EXPECT_EQ(found.status, Status::refused) << found.reason;

  corrupt = bytes;
  header.e_shoff = ~std::uint64_t{0} - 8;
  std::memcpy(corrupt.data(), &header, sizeof(header));
  ql::test::write_bytes(dir / "corrupt.so", corrupt);
  found = ql::core::inspect_plugin_file(dir / "corrupt.so");
  EXPECT_EQ(found.status, Status::refused) << found.reason;
}

// bad-input: a plugin whose metadata section is corrupt | `… bad magic …` | 2
TEST(PluginLoaderTest, CorruptMetadataBlobIsRefused) {
  ql::test::TempDir dir;
  auto bytes = ql::test::read_bytes(fixture("good"));
  const std::string magic(ql::kMetadataMagic);
  auto at = std::search(bytes.begin(), bytes.end(), magic.begin(), magic.end());
  ASSERT_NE(at, bytes.end());
  *at = 'X';
  ql::test::write_bytes(dir / "blob.so", bytes);
  const PluginInspection found = ql::core::inspect_plugin_file(dir / "blob.so");
  EXPECT_EQ(found.status, Status::refused);
  EXPECT_NE(found.reason.find("magic"), std::string::npos) << found.reason;
}

// bad-input: two plugin files with the same kind and name | refused, naming both files | 2
TEST(PluginLoaderTest, DuplicateNamesAreRefusedNamingBothFiles) {
  ql::test::TempDir a, b;
  fs::copy_file(fixture("good"), a / "one.so");
  fs::copy_file(fixture("good"), b / "two.so");
  PluginRegistry registry({a.path(), b.path()});
  EXPECT_TRUE(registry.plugins().empty());
  ASSERT_EQ(registry.refusals().size(), 1u);
  EXPECT_NE(registry.refusals()[0].find((a / "one.so").string()), std::string::npos);
  EXPECT_NE(registry.refusals()[0].find((b / "two.so").string()), std::string::npos);
  EXPECT_THROW((void)registry.find(ql::PluginKind::algorithm, "fixture_good"), ql::ConfigError);
}

TEST(PluginLoaderTest, SameFileReachedTwiceIsNoDuplicate) {
  const fs::path dir = fixture("good").parent_path();
  PluginRegistry registry({dir, dir});
  EXPECT_EQ(registry.plugins().size(), 1u);
  EXPECT_TRUE(registry.refusals().empty());
}

// bad-input: a plugin whose static initialiser aborts | listed from its metadata; its code runs only when an experiment uses it | 0
TEST(PluginLoaderTest, PluginWhoseStaticConstructorAbortsIsListedWithoutRunning) {
  PluginRegistry registry(only(fixture("static_abort").parent_path()));
  ASSERT_EQ(registry.plugins().size(), 1u);
  EXPECT_EQ(registry.plugins()[0].name, "fixture_static_abort");
  // Loading it would abort; that it runs only on load is checked in a child process.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(registry.load(ql::PluginKind::algorithm, "fixture_static_abort"), "");
}

TEST(PluginLoaderTest, DirectoryScanSkipsNonPluginsAndReportsRefusals) {
  ql::test::TempDir dir;
  ql::test::write_text(dir / "x.so", "not a library");
  fs::copy_file(fixture("good"), dir / "good.so");
  fs::copy_file(fixture("no_entry"), dir / "plain.so");
  fs::copy_file(fixture("abi_major"), dir / "old.so");
  ql::test::write_text(dir / "readme.txt", "ignored: not a .so");
  PluginRegistry registry(only(dir.path()));
  ASSERT_EQ(registry.plugins().size(), 1u);
  EXPECT_EQ(registry.plugins()[0].name, "fixture_good");
  EXPECT_EQ(registry.skipped().size(), 2u);
  ASSERT_EQ(registry.refusals().size(), 1u);
  EXPECT_NE(registry.refusals()[0].find("old.so"), std::string::npos);
}

TEST(PluginLoaderTest, ExplicitlyNamedFileMustBeAPlugin) {
  ql::test::TempDir dir;
  ql::test::write_text(dir / "x.so", "not a library");
  EXPECT_THROW(PluginRegistry({dir / "x.so"}), ql::ConfigError);
  EXPECT_THROW(PluginRegistry({fixture("abi_major")}), ql::ConfigError);
  PluginRegistry registry({fixture("good")});
  EXPECT_EQ(registry.plugins().size(), 1u);
}

TEST(PluginLoaderTest, RefusedPluginIsNamedWithTheReasonWhenAskedFor) {
  PluginRegistry registry(only(fixture("abi_major").parent_path()));
  try {
    (void)registry.find(ql::PluginKind::algorithm, "fixture_abi_major");
    FAIL() << "expected a ConfigError";
  } catch (const ql::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot be used"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("ABI 6.0"), std::string::npos) << e.what();
  }
}

// bad-input: a misspelt plugin name | `… (did you mean 'fixture_good'?)` | 2
TEST(PluginLoaderTest, UnknownNameSuggestsTheClosest) {
  PluginRegistry registry(only(fixture("good").parent_path()));
  try {
    (void)registry.find(ql::PluginKind::algorithm, "fixture_god");
    FAIL() << "expected a ConfigError";
  } catch (const ql::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("did you mean 'fixture_good'"), std::string::npos) << e.what();
    // Where it looked, so that a user sees a plugin folder missing from the path.
    EXPECT_NE(std::string(e.what()).find("searched: " + fixture("good").parent_path().string()), std::string::npos)
        << e.what();
  }
  try {
    (void)registry.find_any("nothing_like_it");
    FAIL() << "expected a ConfigError";
  } catch (const ql::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("searched: "), std::string::npos) << e.what();
  }
}

// bad-input: a plugin file or plugin folder other users may write (loading it runs their code) | refused: `good.so: refused, since loading a plugin runs its code and … is writable by every user; fix the permissions (chmod go-w) or set QL_ALLOW_WRITABLE_PLUGINS=1`; with that variable it loads with a warning | 2
TEST(PluginLoaderTest, PluginsOthersMayWriteAreRefusedUnlessAllowed) {
  ql::test::TempDir dir;
  const fs::path folder = dir / "plugins", file = folder / "good.so";
  fs::create_directory(folder);
  fs::copy_file(fixture("good"), file);
  fs::permissions(folder, fs::perms(0755));
  fs::permissions(file, fs::perms(0755));
  EXPECT_EQ(PluginRegistry(only(folder)).plugins().size(), 1u);
  EXPECT_EQ(ql::core::written_by_others(file), "");

  auto expect_refused = [&](const std::string& why) {
    PluginRegistry registry(only(folder));
    EXPECT_TRUE(registry.plugins().empty()) << why;
    ASSERT_EQ(registry.refusals().size(), 1u) << why;
    EXPECT_NE(registry.refusals()[0].find(why), std::string::npos) << registry.refusals()[0];
    EXPECT_NE(registry.refusals()[0].find("QL_ALLOW_WRITABLE_PLUGINS=1"), std::string::npos);
    EXPECT_THROW(PluginRegistry({file}), ql::ConfigError) << why;  // named explicitly
    // The explicit override loads it, and says so.
    PluginRegistry allowed(only(folder), ql::core::PluginTrust::any_writer);
    EXPECT_EQ(allowed.plugins().size(), 1u);
    ASSERT_EQ(allowed.warnings().size(), 1u);
    EXPECT_NE(allowed.warnings()[0].find(why), std::string::npos) << allowed.warnings()[0];
  };
  fs::permissions(file, fs::perms(0757));
  expect_refused(file.string() + " is writable by every user");
  fs::permissions(file, fs::perms(0755));
  fs::permissions(folder, fs::perms(0777));
  expect_refused("its folder " + folder.string() + " is writable by every user");
  // A sticky folder (as /tmp) lets nobody replace another user's file.
  fs::permissions(folder, fs::perms(01777));
  EXPECT_EQ(PluginRegistry(only(folder)).plugins().size(), 1u);
  fs::permissions(folder, fs::perms(0755));
  if (chown(file.c_str(), 12345, static_cast<gid_t>(-1)) == 0) expect_refused("is owned by user id 12345");
}
