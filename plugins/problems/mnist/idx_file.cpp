#include "idx_file.hpp"

#include "quantlab/sdk/error.hpp"

#include <fmt/format.h>
#include <zlib.h>

#include <cstdio>
#include <fstream>
#include <limits>

namespace ql::mnist {

namespace {

constexpr std::uint8_t kUnsignedByte = 0x08;
constexpr int kMaxDims = 4;

std::vector<std::uint8_t> read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  QL_CHECK(in.good(), "{}: cannot open (does the file exist?)", path.string());
  std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  QL_CHECK(!in.bad(), "{}: read error", path.string());
  return bytes;
}

std::vector<std::uint8_t> gunzip(const std::vector<std::uint8_t>& compressed,
                                  const std::filesystem::path& path) {
  z_stream stream{};
  // 16 + MAX_WBITS: expect a gzip header.
  QL_CHECK(inflateInit2(&stream, 16 + MAX_WBITS) == Z_OK, "{}: cannot start zlib", path.string());
  stream.next_in = const_cast<Bytef*>(compressed.data());
  stream.avail_in = static_cast<uInt>(compressed.size());
  std::vector<std::uint8_t> out(compressed.size() * 4 + 1024);
  int status = Z_OK;
  while (status == Z_OK) {
    if (stream.total_out == out.size()) out.resize(out.size() * 2);
    stream.next_out = out.data() + stream.total_out;
    stream.avail_out = static_cast<uInt>(out.size() - stream.total_out);
    status = inflate(&stream, Z_NO_FLUSH);
    if (status == Z_BUF_ERROR && stream.avail_in == 0) break;  // input ended early
    if (status == Z_BUF_ERROR) status = Z_OK;                  // output full: grow and go on
  }
  const std::size_t produced = stream.total_out;
  const std::string message = stream.msg ? stream.msg : "";
  inflateEnd(&stream);
  QL_CHECK(status == Z_STREAM_END, "{}: corrupt or truncated gzip data{}", path.string(),
           message.empty() ? std::string(" (the compressed stream ends early)") : ": " + message);
  out.resize(produced);
  return out;
}

std::uint32_t big_endian(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}

}  // namespace

IdxArray read_idx(const std::filesystem::path& path) {
  std::vector<std::uint8_t> bytes = read_file(path);
  if (bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b) bytes = gunzip(bytes, path);
  const std::string name = path.string();
  QL_CHECK(bytes.size() >= 4, "{}: truncated: {} bytes, shorter than an IDX header", name, bytes.size());
  QL_CHECK(bytes[0] == 0 && bytes[1] == 0, "{}: not an IDX file (magic {:02x}{:02x}{:02x}{:02x})", name,
           bytes[0], bytes[1], bytes[2], bytes[3]);
  QL_CHECK(bytes[2] == kUnsignedByte, "{}: IDX element type 0x{:02x} is not supported (expected 0x08, "
           "unsigned bytes)", name, bytes[2]);
  const int rank = bytes[3];
  QL_CHECK(rank >= 1 && rank <= kMaxDims, "{}: IDX rank {} is not supported (expected 1 to {})", name,
           rank, kMaxDims);
  const std::size_t header = 4 + 4 * static_cast<std::size_t>(rank);
  QL_CHECK(bytes.size() >= header, "{}: truncated: {} bytes, shorter than its {}-byte header", name,
           bytes.size(), header);
  IdxArray array;
  std::uint64_t count = 1;
  for (int d = 0; d < rank; ++d) {
    const std::uint32_t dim = big_endian(bytes.data() + 4 + 4 * d);
    array.dims.push_back(dim);
    count *= dim;
    QL_CHECK(count <= (std::uint64_t{1} << 40), "{}: implausible dimensions in the header", name);
  }
  const std::uint64_t present = bytes.size() - header;
  QL_CHECK(present >= count, "{}: truncated: the header announces {} ({} bytes of data) but only {} "
           "bytes follow", name, fmt::join(array.dims, "x"), count, present);
  QL_CHECK(present == count, "{}: {} bytes of data after the header, expected {} for {}", name,
           present, count, fmt::join(array.dims, "x"));
  array.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(header), bytes.end());
  return array;
}

std::vector<std::uint8_t> encode_idx(const IdxArray& array) {
  std::vector<std::uint8_t> bytes{0, 0, kUnsignedByte, static_cast<std::uint8_t>(array.dims.size())};
  for (std::int64_t dim : array.dims) {
    const auto d = static_cast<std::uint32_t>(dim);
    bytes.insert(bytes.end(), {static_cast<std::uint8_t>(d >> 24), static_cast<std::uint8_t>(d >> 16),
                               static_cast<std::uint8_t>(d >> 8), static_cast<std::uint8_t>(d)});
  }
  bytes.insert(bytes.end(), array.data.begin(), array.data.end());
  return bytes;
}

}  // namespace ql::mnist
