// quantized.h5: a fold's kept result as a complete network in HDF5 (docs/export.md, "HDF5"),
// for any algorithm: each quantised tensor as integer codes with scale, zero point, bits and
// axis, every other tensor in float, the activation grids, the input encoding and the resolved
// configuration (topology and its options). What `[export] format = "h5"` writes at the end of
// a fold and `qlhost export --format h5` remakes from a unit.
#pragma once

#include "run/checkpoints.hpp"

#include <filesystem>
#include <string>

namespace ql::core::run {

/// Writes `file` atomically from `network` (the result's effective weights) and `record`;
/// `configuration` is the unit's resolved config.toml. Throws ql::Error naming the file.
void write_quantized_h5(const std::filesystem::path& file, Network& network, const ResultRecord& record,
                        const std::string& configuration);

}  // namespace ql::core::run
