// Boost.DLL 1.74's library_info is not used here: it reads the static .symtab rather than the
// dynamic export table (so it misses stripped plugins), and it follows string offsets without
// bounds checks (a corrupt file can crash the host). This reader checks every offset against
// the file size before using it.
#include "quantlab/core/plugin_file.hpp"

#include <elf.h>
#include <fmt/format.h>

#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <string_view>
#include <vector>

namespace ql::core {

namespace {

#if defined(__x86_64__)
constexpr std::uint16_t kHostMachine = EM_X86_64;
#elif defined(__aarch64__)
constexpr std::uint16_t kHostMachine = EM_AARCH64;
#else
#error "QuantLab's plugin reader knows only x86_64 and aarch64 hosts"
#endif

// Plugins are a few MB; anything this large is not one.
constexpr std::uintmax_t kMaxPluginBytes = std::uintmax_t{2} << 30;

struct Section {
  std::string_view name;
  Elf64_Shdr header;
};

class ElfImage {
 public:
  explicit ElfImage(std::vector<char> bytes) : bytes_(std::move(bytes)) {}

  // Empty optional and `problem` filled in when the file is not a well-formed ELF64 shared
  // object of this machine; `is_elf` tells whether it at least claimed to be ELF.
  bool parse(std::string& problem, bool& is_elf) {
    is_elf = bytes_.size() >= SELFMAG && std::memcmp(bytes_.data(), ELFMAG, SELFMAG) == 0;
    if (!is_elf) return fail(problem, "not an ELF file");
    if (bytes_.size() < sizeof(Elf64_Ehdr)) {
      return fail(problem, fmt::format("truncated ELF file ({} bytes, shorter than its header)",
                                       bytes_.size()));
    }
    std::memcpy(&header_, bytes_.data(), sizeof(header_));
    if (header_.e_ident[EI_CLASS] != ELFCLASS64 || header_.e_ident[EI_DATA] != ELFDATA2LSB) {
      return fail(problem, "not a 64-bit little-endian ELF file");
    }
    if (header_.e_type != ET_DYN) return fail(problem, "not a shared object (ELF type is not DYN)");
    if (header_.e_machine != kHostMachine) {
      return fail(problem, fmt::format("built for another machine (ELF machine {}, this host {})",
                                       header_.e_machine, kHostMachine));
    }
    if (header_.e_shentsize != sizeof(Elf64_Shdr) || header_.e_shnum == 0 ||
        header_.e_shstrndx >= header_.e_shnum) {
      return fail(problem, "corrupt ELF file (bad section header table)");
    }
    if (!in_bounds(header_.e_shoff, std::uint64_t{header_.e_shnum} * sizeof(Elf64_Shdr))) {
      return fail(problem, fmt::format("truncated ELF file ({} bytes; its section table ends at {})",
                                       bytes_.size(),
                                       header_.e_shoff + std::uint64_t{header_.e_shnum} *
                                                             sizeof(Elf64_Shdr)));
    }
    // Copied out rather than cast in place: a corrupt file may misalign them.
    std::vector<Elf64_Shdr> headers(header_.e_shnum);
    std::memcpy(headers.data(), bytes_.data() + header_.e_shoff,
                headers.size() * sizeof(Elf64_Shdr));
    for (unsigned i = 0; i < header_.e_shnum; ++i) {
      const Elf64_Shdr& section = headers[i];
      if (section.sh_type != SHT_NOBITS && !in_bounds(section.sh_offset, section.sh_size)) {
        return fail(problem,
                    fmt::format("truncated or corrupt ELF file ({} bytes; section {} lies at "
                                "{}..{})",
                                bytes_.size(), i, section.sh_offset,
                                section.sh_offset + section.sh_size));
      }
    }
    const Elf64_Shdr& names = headers[header_.e_shstrndx];
    for (unsigned i = 0; i < header_.e_shnum; ++i) {
      auto name = string_at(names, headers[i].sh_name);
      if (!name) return fail(problem, "corrupt ELF file (section name outside its string table)");
      sections_.push_back({*name, headers[i]});
    }
    return true;
  }

  const Elf64_Shdr* section(std::string_view name) const {
    for (const Section& s : sections_) {
      if (s.name == name) return &s.header;
    }
    return nullptr;
  }

  // True when the dynamic symbol table defines `symbol` as a visible global object.
  bool exports_object(std::string_view symbol) const {
    const Elf64_Shdr* dynsym = section(".dynsym");
    if (!dynsym || dynsym->sh_entsize != sizeof(Elf64_Sym) || dynsym->sh_link >= sections_.size()) {
      return false;
    }
    const Elf64_Shdr& strings = sections_[dynsym->sh_link].header;
    const std::size_t count = dynsym->sh_size / sizeof(Elf64_Sym);
    for (std::size_t i = 0; i < count; ++i) {
      Elf64_Sym s;
      std::memcpy(&s, bytes_.data() + dynsym->sh_offset + i * sizeof(Elf64_Sym), sizeof(s));
      if (s.st_shndx == SHN_UNDEF || ELF64_ST_BIND(s.st_info) == STB_LOCAL ||
          ELF64_ST_VISIBILITY(s.st_other) != STV_DEFAULT) {
        continue;
      }
      if (string_at(strings, s.st_name) == symbol) return ELF64_ST_TYPE(s.st_info) == STT_OBJECT;
    }
    return false;
  }

  std::string_view contents(const Elf64_Shdr& section) const {
    if (section.sh_type == SHT_NOBITS) return {};
    return {bytes_.data() + section.sh_offset, static_cast<std::size_t>(section.sh_size)};
  }

 private:
  static bool fail(std::string& problem, std::string what) {
    problem = std::move(what);
    return false;
  }

  bool in_bounds(std::uint64_t offset, std::uint64_t size) const {
    return offset <= bytes_.size() && size <= bytes_.size() - offset;
  }

  std::optional<std::string_view> string_at(const Elf64_Shdr& table, std::uint64_t offset) const {
    if (table.sh_type != SHT_STRTAB || offset >= table.sh_size) return std::nullopt;
    const char* begin = bytes_.data() + table.sh_offset + offset;
    const std::size_t room = static_cast<std::size_t>(table.sh_size - offset);
    const std::size_t length = strnlen(begin, room);
    if (length == room) return std::nullopt;  // not NUL-terminated inside the table
    return std::string_view(begin, length);
  }

  std::vector<char> bytes_;
  Elf64_Ehdr header_{};
  std::vector<Section> sections_;
};

std::optional<PluginKind> parse_kind(std::string_view text) {
  for (PluginKind kind : {PluginKind::problem, PluginKind::topology, PluginKind::algorithm}) {
    if (to_string(kind) == text) return kind;
  }
  return std::nullopt;
}

// Parses "QLMETA/1\nkey=value\n...defaults:\n<toml>\0".
bool parse_blob(std::string_view blob, PluginMetadata& out, std::string& problem) {
  if (blob.substr(0, kMetadataMagic.size()) != kMetadataMagic) {
    problem = "its .qlmeta section does not start with the QuantLab metadata magic";
    return false;
  }
  blob.remove_prefix(kMetadataMagic.size());
  const std::size_t end = blob.find('\0');
  if (end == std::string_view::npos) {
    problem = "its metadata blob is not NUL-terminated (truncated?)";
    return false;
  }
  blob = blob.substr(0, end);
  constexpr std::string_view kDefaults = "defaults:\n";
  const std::size_t defaults_at = blob.find(kDefaults);
  if (defaults_at == std::string_view::npos) {
    problem = "its metadata blob has no defaults";
    return false;
  }
  out.default_config = std::string(blob.substr(defaults_at + kDefaults.size()));
  std::map<std::string, std::string, std::less<>> fields;
  std::string_view lines = blob.substr(0, defaults_at);
  while (!lines.empty()) {
    const std::size_t newline = lines.find('\n');
    std::string_view line = lines.substr(0, newline);
    lines.remove_prefix(newline == std::string_view::npos ? lines.size() : newline + 1);
    const std::size_t equals = line.find('=');
    if (equals == std::string_view::npos) continue;
    fields.emplace(std::string(line.substr(0, equals)), std::string(line.substr(equals + 1)));
  }
  for (const char* key : {"abi", "kind", "name", "version", "fingerprint", "summary"}) {
    if (fields.count(key) == 0) {
      problem = fmt::format("its metadata blob lacks the field '{}'", key);
      return false;
    }
  }
  unsigned major = 0, minor = 0;
  char tail = 0;
  if (std::sscanf(fields["abi"].c_str(), "%u.%u%c", &major, &minor, &tail) != 2) {
    problem = fmt::format("its metadata has a malformed ABI version '{}'", fields["abi"]);
    return false;
  }
  auto kind = parse_kind(fields["kind"]);
  if (!kind) {
    problem = fmt::format("its metadata names an unknown kind '{}'", fields["kind"]);
    return false;
  }
  out.abi_major = major;
  out.abi_minor = minor;
  out.kind = *kind;
  out.name = fields["name"];
  out.version = fields["version"];
  out.fingerprint = fields["fingerprint"];
  out.summary = fields["summary"];
  return true;
}

std::map<std::string, std::string> fingerprint_fields(std::string_view fingerprint) {
  std::map<std::string, std::string> fields;
  while (!fingerprint.empty()) {
    const std::size_t semicolon = fingerprint.find(';');
    std::string_view field = fingerprint.substr(0, semicolon);
    fingerprint.remove_prefix(semicolon == std::string_view::npos ? fingerprint.size()
                                                                  : semicolon + 1);
    const std::size_t equals = field.find('=');
    if (equals == std::string_view::npos) {
      fields.emplace(std::string(field), "");
    } else {
      fields.emplace(std::string(field.substr(0, equals)), std::string(field.substr(equals + 1)));
    }
  }
  return fields;
}

}  // namespace

std::string fingerprint_difference(std::string_view expected, std::string_view found) {
  auto want = fingerprint_fields(expected);
  auto have = fingerprint_fields(found);
  std::vector<std::string> differences;
  for (const auto& [key, value] : want) {
    auto it = have.find(key);
    const std::string other = it == have.end() ? "nothing" : it->second;
    if (other != value) differences.push_back(fmt::format("{}: expected {}, found {}", key, value, other));
  }
  for (const auto& [key, value] : have) {
    if (want.count(key) == 0) differences.push_back(fmt::format("{}: unexpected, found {}", key, value));
  }
  return fmt::format("{}", fmt::join(differences, "; "));
}

PluginInspection inspect_plugin_file(const std::filesystem::path& file) {
  return inspect_plugin_file(file, kAbiMajor, kAbiMinor, build_fingerprint());
}

PluginInspection inspect_plugin_file(const std::filesystem::path& file, std::uint32_t abi_major,
                                     std::uint32_t abi_minor, std::string_view fingerprint) {
  PluginInspection result;
  result.metadata.path = file;
  auto verdict = [&](PluginInspection::Status status, const std::string& why) {
    result.status = status;
    result.reason = fmt::format("{}: {}", file.string(), why);
    return result;
  };
  using Status = PluginInspection::Status;

  std::error_code error;
  const auto size = std::filesystem::file_size(file, error);
  if (error) return verdict(Status::not_plugin, "cannot read: " + error.message());
  if (size > kMaxPluginBytes) return verdict(Status::not_plugin, "too large to be a plugin");
  std::vector<char> bytes(static_cast<std::size_t>(size));
  std::ifstream in(file, std::ios::binary);
  if (!in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()))) {
    return verdict(Status::not_plugin, "cannot read the file");
  }

  ElfImage image(std::move(bytes));
  std::string problem;
  bool is_elf = false;
  if (!image.parse(problem, is_elf)) {
    // A file that claims to be ELF but is broken may be a damaged plugin: say so.
    return verdict(is_elf ? Status::refused : Status::not_plugin, problem);
  }
  const Elf64_Shdr* meta = image.section(kMetadataSection);
  const bool has_entry = image.exports_object(kEntrySymbol);
  if (!meta && !has_entry) {
    return verdict(Status::not_plugin,
                   fmt::format("not a QuantLab plugin (no '{}' symbol and no {} section)",
                               kEntrySymbol, kMetadataSection));
  }
  if (!has_entry) {
    return verdict(Status::refused, fmt::format("has a {} section but does not export '{}'",
                                                kMetadataSection, kEntrySymbol));
  }
  if (!meta) {
    return verdict(Status::refused,
                   fmt::format("exports '{}' but has no {} metadata section (not built with "
                               "ql_add_plugin/QL_PLUGIN?)",
                               kEntrySymbol, kMetadataSection));
  }
  if (!parse_blob(image.contents(*meta), result.metadata, problem)) {
    return verdict(Status::refused, problem);
  }
  const PluginMetadata& m = result.metadata;
  if (m.abi_major != abi_major) {
    return verdict(Status::refused,
                   fmt::format("plugin ABI {}.{} is not supported: this host needs ABI major {} "
                               "(host ABI {}.{})",
                               m.abi_major, m.abi_minor, abi_major, abi_major, abi_minor));
  }
  if (m.abi_minor > abi_minor) {
    return verdict(Status::refused,
                   fmt::format("plugin ABI {}.{} is newer than this host's ABI {}.{}: upgrade "
                               "QuantLab or rebuild the plugin",
                               m.abi_major, m.abi_minor, abi_major, abi_minor));
  }
  if (m.fingerprint != fingerprint) {
    return verdict(Status::refused,
                   fmt::format("built for another host: {} (expected fingerprint \"{}\", found "
                               "\"{}\")",
                               fingerprint_difference(fingerprint, m.fingerprint), fingerprint,
                               m.fingerprint));
  }
  result.status = Status::plugin;
  return result;
}

}  // namespace ql::core
