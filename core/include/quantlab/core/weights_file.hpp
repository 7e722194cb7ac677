// Pretrained weights in (docs/weights.md): the tensors of a QuantLab checkpoint or unit, of a
// PyTorch state dict saved with torch.save, or of a .safetensors file, by name, and their copy
// into a network whose parameter names are torchvision's (resnet, vgg, alexnet) or our own.
//
//   const WeightsFile weights = read_weights_file("resnet18.safetensors");
//   const WeightsLoad load = load_weights(*network, weights.tensors, /*strict=*/true);
#pragma once

#include "quantlab/sdk/topology.hpp"

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace ql::core {

enum class WeightsFormat { checkpoint, state_dict, safetensors };

struct WeightsFile {
  WeightsFormat format;
  std::filesystem::path path;  ///< the file read (a unit's checkpoint, for a unit folder)
  std::string sha256;          ///< of that file, in hex
  std::map<std::string, at::Tensor> tensors;
};

/// Reads `path`: a unit folder (its fold 0 result.pt, else best.pt, else last.pt), a QuantLab
/// checkpoint, a state dict (a torch.save zip of name -> tensor), or a .safetensors file, told
/// apart by their first bytes. Throws ql::Error naming the file and what is wrong.
WeightsFile read_weights_file(const std::filesystem::path& path);

/// The tensors of a .safetensors file's bytes (little-endian F64, F32, F16, BF16, I64, I32,
/// I16, I8, U8, BOOL); throws ql::Error naming `what` when the header lies about offsets,
/// dtypes or shapes.
std::map<std::string, at::Tensor> read_safetensors(const std::string& bytes, const std::string& what);
/// The tensors of a torch.save'd dictionary of tensors; throws ql::Error naming `what`.
std::map<std::string, at::Tensor> read_state_dict(const std::string& bytes, const std::string& what);

/// What load_weights did: the tensors copied and those it could not match.
struct WeightsLoad {
  std::size_t loaded = 0;
  std::vector<std::string> missing;     ///< the network's, not in the file
  std::vector<std::string> unexpected;  ///< the file's, not in the network
  std::vector<std::string> mismatched;  ///< in both, of other shapes: "name [file] vs [network]"
};

/// Copies the tensors of `tensors` into `network`'s parameters and buffers of the same name and
/// shape (batch norm's num_batches_tracked is not required). Strict: any missing, unexpected or
/// mismatched tensor is a ql::Error listing the first few of each with their counts, and
/// nothing is copied; otherwise what matches is copied.
WeightsLoad load_weights(Network& network, const std::map<std::string, at::Tensor>& tensors, bool strict);

}  // namespace ql::core
