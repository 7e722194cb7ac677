#include "run/quantized_h5.hpp"

#include "quantlab/core/experiment_store.hpp"
#include "quantlab/sdk/build_info.hpp"
#include "quantlab/sdk/error.hpp"

#include "hdf5_support.hpp"

#include <torch/types.h>

#include <fmt/format.h>

#include <cmath>

namespace ql::core::run {

namespace fs = std::filesystem;
using namespace hdf5;

namespace {

template <typename T>
void write_attribute(hid_t object, const char* name, hid_t type, const T& value, const fs::path& path) {
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attribute(H5Acreate2(object, name, type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  QL_CHECK(attribute.valid(), "{}: cannot create attribute {}", path.string(), name);
  check(H5Awrite(attribute.get(), type, &value), std::string("write attribute ") + name, path);
}

Handle create_group(hid_t parent, const std::string& name, const fs::path& path) {
  Handle lcpl = link_properties();
  Handle group(H5Gcreate2(parent, name.c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
  QL_CHECK(group.valid(), "{}: cannot create group {}", path.string(), name);
  return group;
}

std::vector<hsize_t> dims_of(const at::Tensor& tensor) {
  return std::vector<hsize_t>(tensor.sizes().begin(), tensor.sizes().end());
}

// A tensor as a dataset: float32, or int64 for integer tensors (batch norm's counters).
void write_tensor(hid_t parent, const std::string& name, const at::Tensor& tensor, const fs::path& path) {
  if (at::isIntegralType(tensor.scalar_type(), /*includeBool=*/true)) {
    const at::Tensor values = tensor.detach().to(torch::kCPU, torch::kLong).contiguous();
    write_array(parent, name, H5T_NATIVE_INT64, dims_of(values), values.data_ptr<std::int64_t>(), path);
  } else {
    const at::Tensor values = tensor.detach().to(torch::kCPU, torch::kFloat).contiguous();
    write_array(parent, name, H5T_NATIVE_FLOAT, dims_of(values), values.data_ptr<float>(), path);
  }
}

// codes in the narrowest of int8, int16, int32 that holds them, with their scales.
void write_integer_form(hid_t parent, const std::string& name, const IntegerForm& form, const std::string& quantizer,
                        const fs::path& path) {
  Handle group = create_group(parent, name, path);
  const at::Tensor codes = form.codes.to(torch::kCPU, torch::kLong).contiguous();
  const at::Tensor zero_point = form.zero_point.to(torch::kCPU, torch::kLong).flatten().contiguous();
  const std::int64_t low = std::min(codes.min().item<std::int64_t>(), zero_point.min().item<std::int64_t>());
  const std::int64_t high = std::max(codes.max().item<std::int64_t>(), zero_point.max().item<std::int64_t>());
  if (low >= -128 && high <= 127) {
    const at::Tensor narrow = codes.to(torch::kInt8);
    write_array(group.get(), "codes", H5T_NATIVE_INT8, dims_of(narrow), narrow.data_ptr<std::int8_t>(), path);
  } else if (low >= -32768 && high <= 32767) {
    const at::Tensor narrow = codes.to(torch::kInt16);
    write_array(group.get(), "codes", H5T_NATIVE_INT16, dims_of(narrow), narrow.data_ptr<std::int16_t>(), path);
  } else {
    const at::Tensor narrow = codes.to(torch::kInt32);
    write_array(group.get(), "codes", H5T_NATIVE_INT32, dims_of(narrow), narrow.data_ptr<std::int32_t>(), path);
  }
  write_tensor(group.get(), "scale", form.scale.flatten(), path);
  write_tensor(group.get(), "zero_point", zero_point, path);
  const std::int64_t bits = static_cast<std::int64_t>(std::ceil(std::log2(static_cast<double>(high - low + 1))));
  write_attribute(group.get(), "bits", H5T_NATIVE_INT64, std::max<std::int64_t>(1, bits), path);
  write_attribute(group.get(), "axis", H5T_NATIVE_INT64, form.axis, path);
  write_text_attribute(group.get(), "quantizer", quantizer, path);
}

void write_grid(hid_t parent, const std::string& name, const AffineGrid& grid, const std::string& quantizer,
                const fs::path& path) {
  Handle group = create_group(parent, name, path);
  write_text_attribute(group.get(), "range", grid.range == AffineGrid::Range::fixed ? "fixed" : "max_abs", path);
  write_attribute(group.get(), "scale", H5T_NATIVE_FLOAT, grid.scale, path);
  write_attribute(group.get(), "zero_point", H5T_NATIVE_INT64, grid.zero_point, path);
  write_attribute(group.get(), "low", H5T_NATIVE_INT64, grid.low, path);
  write_attribute(group.get(), "high", H5T_NATIVE_INT64, grid.high, path);
  write_attribute(group.get(), "offset", H5T_NATIVE_FLOAT, grid.offset, path);
  write_attribute(group.get(), "per_sample", H5T_NATIVE_INT64, std::int64_t{grid.per_sample ? 1 : 0}, path);
  write_text_attribute(group.get(), "quantizer", quantizer, path);
}

void write_input_encoding(hid_t file, const InputEncoding& encoding, const fs::path& path) {
  Handle group = create_group(file, "input_encoding", path);
  for (std::size_t k = 0; k < encoding.steps.size(); ++k) {
    const InputStep& step = encoding.steps[k];
    const std::string name = fmt::format("step{}", k);
    write_array(group.get(), name, H5T_NATIVE_FLOAT, {step.values.size()}, step.values.data(), path);
    Handle dataset(H5Dopen2(group.get(), name.c_str(), H5P_DEFAULT), H5Dclose);
    write_text_attribute(dataset.get(), "operation",
                         step.operation == InputStep::Operation::subtract   ? "subtract"
                         : step.operation == InputStep::Operation::multiply ? "multiply"
                                                                            : "divide",
                         path);
  }
}

void write_file(const fs::path& temporary, const fs::path& path, Network& network, const ResultRecord& record,
                const std::string& configuration) {
  Handle file(H5Fcreate(temporary.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
  QL_CHECK(file.valid(), "{}: cannot create the HDF5 file", temporary.string());
  write_text_attribute(file.get(), "format", "quantlab-network/1", path);
  write_text_attribute(file.get(), "quantlab_version", QL_SDK_VERSION, path);
  write_text_attribute(file.get(), "configuration", configuration, path);
  Handle tensors = create_group(file.get(), "tensors", path);
  Handle quantized = create_group(file.get(), "quantized", path);
  for (const auto& p : network.named_parameters()) {
    const auto form = record.integer_forms.find(p.key());
    if (form == record.integer_forms.end()) {
      write_tensor(tensors.get(), p.key(), p.value(), path);
    } else {
      const auto quantizer = record.quantizers.find(p.key());
      write_integer_form(quantized.get(), p.key(), form->second,
                         quantizer == record.quantizers.end() ? "" : quantizer->second, path);
    }
  }
  for (const auto& b : network.named_buffers()) write_tensor(tensors.get(), b.key(), b.value(), path);
  Handle activations = create_group(file.get(), "activations", path);
  for (const auto& [name, quantizer] : record.quantizers) {
    const bool activation = name == "input" || (name.size() > 7 && name.compare(name.size() - 7, 7, ".output") == 0);
    if (!activation) continue;
    const auto grid = record.grids.find(name);
    QL_CHECK(grid != record.grids.end(), "{}: the activation '{}' is quantised by {}, which has no affine grid",
             path.string(), name, quantizer);
    write_grid(activations.get(), name, grid->second, quantizer, path);
  }
  if (record.input_encoding) write_input_encoding(file.get(), *record.input_encoding, path);
  check(H5Fflush(file.get(), H5F_SCOPE_GLOBAL), "flush", temporary);
}

}  // namespace

void write_quantized_h5(const fs::path& file, Network& network, const ResultRecord& record,
                        const std::string& configuration) {
  silence_hdf5();
  write_atomically(file, [&](const fs::path& temporary) { write_file(temporary, file, network, record, configuration); });
}

}  // namespace ql::core::run
