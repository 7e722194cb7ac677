#include "quantlab/core/weights_file.hpp"

#include "quantlab/core/experiment_store.hpp"
#include "quantlab/sdk/error.hpp"

#include <nlohmann/json.hpp>
#include <openssl/evp.h>
#include <torch/serialize/input-archive.h>
#include <torch/types.h>

#include <fmt/format.h>

#include <cstring>
#include <limits>

namespace ql::core {

namespace fs = std::filesystem;

namespace {

std::string sha256_hex(const std::string& bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  QL_CHECK(EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_sha256(), nullptr) == 1,
           "SHA-256 failed (OpenSSL)");
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) hex += fmt::format("{:02x}", digest[i]);
  return hex;
}

// The checkpoint a unit's weights come from: fold 0's kept result, else its best, else its last.
fs::path unit_checkpoint(const fs::path& unit) {
  for (const char* name : {"result.pt", "best.pt", "last.pt"}) {
    const fs::path file = unit / "fold0" / "checkpoints" / name;
    if (fs::exists(file)) return file;
  }
  throw Error(fmt::format("{}: a unit folder without checkpoints (no fold0/checkpoints/result.pt, best.pt or last.pt)",
                          unit.string()));
}

std::map<std::string, at::Tensor> checkpoint_tensors(const fs::path& path) {
  torch::serialize::InputArchive archive;
  load_archive(archive, read_checkpoint(path));
  std::map<std::string, at::Tensor> tensors;
  for (const std::string& key : archive.keys()) {
    if (key.rfind("model/", 0) != 0) continue;
    at::Tensor tensor;
    if (archive.try_read(key, tensor, /*is_buffer=*/true)) tensors.emplace(key.substr(6), tensor);
  }
  QL_CHECK(!tensors.empty(), "{}: a QuantLab checkpoint without a network (no model/ tensors)", path.string());
  return tensors;
}

at::ScalarType safetensors_dtype(const std::string& name, const std::string& what, const std::string& tensor) {
  static const std::map<std::string, at::ScalarType> types{
      {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf}, {"BF16", at::kBFloat16}, {"I64", at::kLong},
      {"I32", at::kInt},    {"I16", at::kShort}, {"I8", at::kChar},  {"U8", at::kByte},       {"BOOL", at::kBool}};
  const auto found = types.find(name);
  QL_CHECK(found != types.end(), "{}: tensor '{}' has dtype '{}', which QuantLab does not read", what, tensor, name);
  return found->second;
}

}  // namespace

std::map<std::string, at::Tensor> read_safetensors(const std::string& bytes, const std::string& what) {
  QL_CHECK(bytes.size() >= 8, "{}: not a safetensors file ({} bytes, shorter than its header length)", what,
           bytes.size());
  std::uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
  QL_CHECK(header_size <= bytes.size() - 8, "{}: its header claims {} bytes, more than the file's {}", what, header_size,
           bytes.size() - 8);
  const std::size_t data_start = 8 + static_cast<std::size_t>(header_size);
  const std::size_t data_size = bytes.size() - data_start;
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + static_cast<std::ptrdiff_t>(data_start));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: its header is not JSON ({})", what, e.what()));
  }
  QL_CHECK(header.is_object(), "{}: its header is not a JSON object", what);
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    QL_CHECK(entry.is_object() && entry.contains("dtype") && entry["dtype"].is_string() && entry.contains("shape") &&
                 entry["shape"].is_array() && entry.contains("data_offsets") && entry["data_offsets"].is_array() &&
                 entry["data_offsets"].size() == 2,
             "{}: tensor '{}' lacks dtype, shape or data_offsets [begin, end]", what, name);
    const at::ScalarType dtype = safetensors_dtype(entry["dtype"].get<std::string>(), what, name);
    std::vector<std::int64_t> shape;
    double elements = 1;
    for (const auto& size : entry["shape"]) {
      QL_CHECK(size.is_number_unsigned(), "{}: tensor '{}' has a shape entry that is not a size", what, name);
      shape.push_back(static_cast<std::int64_t>(std::min<std::uint64_t>(size.get<std::uint64_t>(), std::numeric_limits<std::int64_t>::max())));
      elements *= static_cast<double>(shape.back());
    }
    const auto& offsets = entry["data_offsets"];
    QL_CHECK(offsets[0].is_number_unsigned() && offsets[1].is_number_unsigned(),
             "{}: tensor '{}' has data_offsets that are not byte offsets", what, name);
    const auto begin = offsets[0].get<std::uint64_t>(), end = offsets[1].get<std::uint64_t>();
    QL_CHECK(begin <= end && end <= data_size, "{}: tensor '{}' lies at bytes [{}, {}) of a data section of {}", what,
             name, begin, end, data_size);
    const double expected = elements * static_cast<double>(c10::elementSize(dtype));
    QL_CHECK(static_cast<double>(end - begin) == expected,
             "{}: tensor '{}' of shape [{}] and dtype {} needs {} bytes, its offsets give {}", what, name,
             fmt::join(shape, ", "), entry["dtype"].get<std::string>(), expected, end - begin);
    at::Tensor tensor;
    try {
      tensor = torch::empty(shape, torch::TensorOptions().dtype(dtype));
    } catch (const c10::Error& e) {  // sizes whose product overflows, with a zero among them
      throw Error(fmt::format("{}: tensor '{}' has shape [{}] ({})", what, name, fmt::join(shape, ", "),
                              e.what_without_backtrace()));
    }
    if (end > begin) std::memcpy(tensor.data_ptr(), bytes.data() + data_start + begin, end - begin);
    tensors.emplace(name, tensor);
  }
  return tensors;
}

WeightsFile read_weights_file(const fs::path& given) {
  QL_CHECK(fs::exists(given), "{}: no such weights file or unit folder", given.string());
  WeightsFile file;
  file.path = fs::is_directory(given) ? unit_checkpoint(given) : given;
  const std::string bytes = read_text_file(file.path);
  file.sha256 = sha256_hex(bytes);
  const std::string what = file.path.string();
  const bool zip = bytes.size() >= 4 && bytes.compare(0, 4, "PK\x03\x04") == 0;
  const bool quantlab = bytes.size() >= 16 && bytes.compare(bytes.size() - 16, 4, "QLCK") == 0;
  if (quantlab) {
    file.format = WeightsFormat::checkpoint;
    file.tensors = checkpoint_tensors(file.path);
  } else if (zip) {
    file.format = WeightsFormat::state_dict;
    file.tensors = read_state_dict(bytes, what);
  } else if (bytes.size() >= 9 && bytes[8] == '{') {
    file.format = WeightsFormat::safetensors;
    file.tensors = read_safetensors(bytes, what);
  } else {
    throw Error(fmt::format("{}: neither a QuantLab checkpoint, a state dict saved with torch.save, nor a "
                            ".safetensors file",
                            what));
  }
  return file;
}

WeightsLoad load_weights(Network& network, const std::map<std::string, at::Tensor>& tensors, bool strict) {
  WeightsLoad load;
  std::map<std::string, at::Tensor> targets;
  for (auto& p : network.named_parameters()) targets.emplace(p.key(), p.value());
  for (auto& b : network.named_buffers()) targets.emplace(b.key(), b.value());
  const auto optional = [](const std::string& name) {
    return name.size() >= 20 && name.compare(name.size() - 20, 20, "num_batches_tracked") == 0;
  };
  for (const auto& [name, target] : targets) {
    const auto found = tensors.find(name);
    if (found == tensors.end()) {
      if (!optional(name)) load.missing.push_back(name);
    } else if (found->second.sizes() != target.sizes()) {
      load.mismatched.push_back(fmt::format("{} [{}] vs [{}]", name, fmt::join(found->second.sizes(), ", "),
                                            fmt::join(target.sizes(), ", ")));
    }
  }
  for (const auto& [name, tensor] : tensors) {
    if (!targets.count(name)) load.unexpected.push_back(name);
  }
  if (strict && !(load.missing.empty() && load.unexpected.empty() && load.mismatched.empty())) {
    const auto first = [](const std::vector<std::string>& names) {
      const std::size_t shown = std::min<std::size_t>(3, names.size());
      return fmt::format("{}{}{}", names.size(), shown ? ": " : "",
                         fmt::join(names.begin(), names.begin() + static_cast<std::ptrdiff_t>(shown), ", ")) +
             (names.size() > shown ? ", ..." : "");
    };
    throw Error(fmt::format("the weights do not fit the network: missing {}; unexpected {}; other shapes {} "
                            "([topology] weights_strict = false loads what fits)",
                            first(load.missing), first(load.unexpected), first(load.mismatched)));
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) {
    const auto found = tensors.find(name);
    if (found == tensors.end() || found->second.sizes() != target.sizes()) continue;
    target.copy_(found->second);
    ++load.loaded;
  }
  return load;
}

}  // namespace ql::core
