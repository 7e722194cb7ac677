// quantized.h5: the deployable result of a post-training quantisation. One group per layer
// (its dotted name), holding
//   codes        int32, the weight's shape: the index of each weight's atom (0 .. levels-1)
//   atoms        float64 [levels]: the alphabet, ascending
//   atom_integers int32 [levels]: atoms[k] = unit * atom_integers[k]
// and attributes unit, levels, bits, alphabet_scalar, and for equispaced alphabets scale and
// zero_point (atoms[k] = scale * (k - zero_point)); the file's attribute `method` says how
// the codes were chosen.
#pragma once

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <string>
#include <vector>

namespace ql::greedy {

struct ExportedLayer {
  std::string name;
  at::Tensor codes;  ///< int64 atom indices, the weight's shape
  at::Tensor atoms;  ///< float64, ascending, symmetric
  double bits;
  double alphabet_scalar;
};

/// Writes `file` (the plugin hands it a temporary path through Context::write_file, which
/// makes the write atomic); throws ql::Error naming it on failure.
void export_quantized(const std::filesystem::path& file, const std::string& method,
                      const std::vector<ExportedLayer>& layers);

/// One layer's GPFQ problem as data, for checking against other implementations: x and
/// x_tilde [G, R, N], the neurons w [G, N, F], the atoms and the chosen atom indices [G, N, F].
struct LayerData {
  std::string name;
  at::Tensor x, x_tilde, w, atoms, codes;
};

/// Writes layer_data.h5: one group per layer with datasets x and x_tilde stored transposed as
/// [G, N, R] (a feature's values over the rows are contiguous), w, atoms and codes.
void export_layer_data(const std::filesystem::path& file, const std::vector<LayerData>& layers);

}  // namespace ql::greedy
