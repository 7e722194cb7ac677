#include "quantized_export.hpp"

#include "gpfq.hpp"

#include "quantlab/sdk/error.hpp"

#include <hdf5.h>
#include <torch/types.h>

namespace ql::greedy {

namespace fs = std::filesystem;

namespace {

// Closes an HDF5 identifier with the matching function when it goes out of scope.
struct Closer {
  hid_t id;
  herr_t (*close)(hid_t);
  ~Closer() {
    if (id >= 0) close(id);
  }
};

void attribute(hid_t object, const char* name, hid_t type, const void* value) {
  Closer space{H5Screate(H5S_SCALAR), H5Sclose};
  Closer attr{H5Acreate2(object, name, type, space.id, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  QL_CHECK(attr.id >= 0 && H5Awrite(attr.id, type, value) >= 0, "cannot write attribute {}", name);
}

void dataset(hid_t group, const char* name, hid_t file_type, hid_t memory_type, const at::Tensor& values) {
  std::vector<hsize_t> dims(values.sizes().begin(), values.sizes().end());
  Closer space{H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose};
  Closer data{H5Dcreate2(group, name, file_type, space.id, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose};
  QL_CHECK(data.id >= 0 && H5Dwrite(data.id, memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data_ptr()) >= 0,
           "cannot write dataset {}", name);
}

}  // namespace

void export_quantized(const fs::path& file, const std::string& method, const std::vector<ExportedLayer>& layers) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  try {
    {
      Closer h5{H5Fcreate(file.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose};
      QL_CHECK(h5.id >= 0, "cannot create the HDF5 file");
      Closer string_type{H5Tcopy(H5T_C_S1), H5Tclose};
      H5Tset_size(string_type.id, method.size() + 1);
      attribute(h5.id, "method", string_type.id, method.c_str());
      for (const ExportedLayer& layer : layers) {
        Closer group{H5Gcreate2(h5.id, layer.name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose};
        QL_CHECK(group.id >= 0, "cannot create group {}", layer.name);
        const at::Tensor codes = layer.codes.to(torch::kCPU, torch::kInt32).contiguous();
        const at::Tensor atoms = layer.atoms.to(torch::kCPU, torch::kFloat64).contiguous();
        dataset(group.id, "codes", H5T_STD_I32LE, H5T_NATIVE_INT32, codes);
        dataset(group.id, "atoms", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, atoms);
        const std::int64_t levels = atoms.size(0);
        const IntegerForm integers = alphabet_integers(torch::arange(levels), atoms);
        const double unit = integers.scale.item<double>();
        dataset(group.id, "atom_integers", H5T_STD_I32LE, H5T_NATIVE_INT32, integers.codes.to(torch::kInt32).contiguous());
        attribute(group.id, "unit", H5T_NATIVE_DOUBLE, &unit);
        // scale and zero_point describe equispaced alphabets only (not those with an added zero).
        const at::Tensor steps = atoms.diff();
        if (levels > 1 && torch::allclose(steps, steps[0].expand_as(steps))) {
          const double zero_point = (static_cast<double>(levels) - 1.0) / 2.0;
          const double scale = steps[0].item<double>();
          attribute(group.id, "scale", H5T_NATIVE_DOUBLE, &scale);
          attribute(group.id, "zero_point", H5T_NATIVE_DOUBLE, &zero_point);
        }
        attribute(group.id, "levels", H5T_NATIVE_INT64, &levels);
        attribute(group.id, "bits", H5T_NATIVE_DOUBLE, &layer.bits);
        attribute(group.id, "alphabet_scalar", H5T_NATIVE_DOUBLE, &layer.alphabet_scalar);
      }
      QL_CHECK(H5Fflush(h5.id, H5F_SCOPE_GLOBAL) >= 0, "cannot flush (disk full?)");
    }
  } catch (const std::exception& e) {
    throw Error(fmt::format("{}: {}", file.string(), message_of(e)));
  }
}

void export_layer_data(const fs::path& file, const std::vector<LayerData>& layers) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  try {
    {
      Closer h5{H5Fcreate(file.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose};
      QL_CHECK(h5.id >= 0, "cannot create the HDF5 file");
      for (const LayerData& layer : layers) {
        Closer group{H5Gcreate2(h5.id, layer.name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose};
        QL_CHECK(group.id >= 0, "cannot create group {}", layer.name);
        auto doubles = [](const at::Tensor& t) { return t.to(torch::kCPU, torch::kFloat64).contiguous(); };
        dataset(group.id, "x", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, doubles(layer.x.transpose(1, 2)));
        dataset(group.id, "x_tilde", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, doubles(layer.x_tilde.transpose(1, 2)));
        dataset(group.id, "w", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, doubles(layer.w));
        dataset(group.id, "atoms", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, doubles(layer.atoms));
        dataset(group.id, "codes", H5T_STD_I32LE, H5T_NATIVE_INT32, layer.codes.to(torch::kCPU, torch::kInt32).contiguous());
      }
    }
  } catch (const std::exception& e) {
    throw Error(fmt::format("{}: {}", file.string(), message_of(e)));
  }
}

}  // namespace ql::greedy
