// Reading MNIST's IDX files (raw or gzip-compressed): a big-endian header with the element
// type and dimensions, then the data. Every mismatch is an error naming the file.
//
//   IdxArray images = read_idx("train-images-idx3-ubyte.gz");  // dims {60000, 28, 28}
//   IdxArray labels = read_idx("train-labels-idx1-ubyte.gz");  // dims {60000}
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

namespace ql::mnist {

/// An IDX file of unsigned bytes (type code 0x08, the only type MNIST uses).
struct IdxArray {
  std::vector<std::int64_t> dims;
  std::vector<std::uint8_t> data;
};

/// Reads `path`; gzip data is recognised by its magic bytes, whatever the file name.
/// Throws ql::Error naming the file for an unreadable, truncated or malformed file.
IdxArray read_idx(const std::filesystem::path& path);

/// Encodes an IDX array (the tests write fixtures with it).
std::vector<std::uint8_t> encode_idx(const IdxArray& array);

}  // namespace ql::mnist
