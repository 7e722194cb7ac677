// What the fuzz targets share: the input as a file (the readers under test take paths), and
// the rule that bad input may only end in a ql::Error.
#pragma once

#include "quantlab/sdk/error.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

namespace ql::fuzz {

/// A private folder for this fuzzing process (in /dev/shm when there is one).
inline const std::filesystem::path& scratch() {
  static const std::filesystem::path dir = [] {
    const std::filesystem::path base = std::filesystem::exists("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
    std::filesystem::path d = base / ("quantlab-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

inline std::filesystem::path write_input(const std::string& name, const std::uint8_t* data, std::size_t size) {
  const std::filesystem::path path = scratch() / name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return path;
}

/// Runs `read`: a ql::Error is the expected answer to bad input; any other exception is a
/// finding (it would reach the user without the context our errors carry).
template <typename Read>
void expect_clean_failure(Read&& read) {
  try {
    read();
  } catch (const ql::Error&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "finding: %s escaped as a non-ql exception: %s\n", typeid(e).name(), e.what());
    std::abort();
  }
}

}  // namespace ql::fuzz
