// The HDF5 C library as the host's HDF5 files use it (metrics.h5, predictions.h5): handles that
// close themselves, errors that name the file, whole-array writes and size-checked reads.
#pragma once

#include "quantlab/sdk/error.hpp"

#include <hdf5.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace ql::core::hdf5 {

// An HDF5 identifier closed by the matching H5?close when it goes out of scope.
class Handle {
 public:
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~Handle() {
    if (id_ >= 0) close_(id_);
  }
  Handle(Handle&& other) noexcept : id_(other.id_), close_(other.close_) { other.id_ = -1; }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

inline void check(herr_t status, std::string_view what, const std::filesystem::path& path) {
  QL_CHECK(status >= 0, "{}: cannot {} (HDF5 error; disk full?)", path.string(), what);
}

// HDF5 prints its error stack to stderr by default; our errors say what failed instead.
inline void silence_hdf5() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

inline Handle link_properties() {
  Handle properties(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(properties.get(), 1);
  return properties;
}

inline void write_array(hid_t parent, const std::string& name, hid_t type, const std::vector<hsize_t>& dims,
                        const void* data, const std::filesystem::path& path) {
  Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  Handle lcpl = link_properties();
  Handle dataset(H5Dcreate2(parent, name.c_str(), type, space.get(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT),
                 H5Dclose);
  QL_CHECK(dataset.valid(), "{}: cannot create dataset {}", path.string(), name);
  if (dims.empty() || std::all_of(dims.begin(), dims.end(), [](hsize_t d) { return d > 0; })) {
    check(H5Dwrite(dataset.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "write " + name, path);
  }
}

// A scalar string attribute of `object` (fixed length, as h5py reads it: bytes).
inline void write_text_attribute(hid_t object, const char* name, const std::string& value,
                                 const std::filesystem::path& path) {
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), std::max<std::size_t>(1, value.size()));
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attribute(H5Acreate2(object, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  QL_CHECK(attribute.valid(), "{}: cannot create attribute {}", path.string(), name);
  check(H5Awrite(attribute.get(), type.get(), value.c_str()), std::string("write attribute ") + name, path);
}

template <typename T>
std::vector<T> read_array(hid_t file, const std::string& name, hid_t type, std::vector<hsize_t>& dims,
                          const std::filesystem::path& path) {
  Handle dataset(H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Dclose);
  QL_CHECK(dataset.valid(), "{}: missing dataset {}", path.string(), name);
  Handle space(H5Dget_space(dataset.get()), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  QL_CHECK(rank >= 1 && rank <= 2, "{}: dataset {} has rank {}", path.string(), name, rank);
  dims.assign(static_cast<std::size_t>(rank), 0);
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  // A corrupt file can claim any extent: allow no more than its size could hold (generously,
  // for a file compressed by h5repack) before allocating.
  std::error_code size_error;
  const auto file_bytes = static_cast<double>(std::filesystem::file_size(path, size_error));
  double claimed = static_cast<double>(sizeof(T));
  hsize_t count = 1;
  for (hsize_t d : dims) {
    claimed *= static_cast<double>(d);
    count *= d;
  }
  QL_CHECK(!size_error && claimed <= std::max(1024.0 * file_bytes, 1e6),
           "{}: dataset {} claims {} values, more than a file of {} bytes can hold (corrupt?)", path.string(), name,
           claimed / sizeof(T), file_bytes);
  std::vector<T> values(count);
  if (count > 0) {
    check(H5Dread(dataset.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()), "read " + name, path);
  }
  return values;
}

}  // namespace ql::core::hdf5
