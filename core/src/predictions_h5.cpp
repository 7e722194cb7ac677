// predictions.h5 through the HDF5 C library.
#include "quantlab/core/predictions.hpp"

#include "quantlab/core/experiment_store.hpp"
#include "quantlab/core/report.hpp"
#include "quantlab/sdk/error.hpp"

#include "hdf5_support.hpp"

#include <torch/types.h>

#include <fmt/format.h>

#include <algorithm>
#include <numeric>

namespace ql::core {

namespace fs = std::filesystem;
using namespace hdf5;

namespace {

void write_group(hid_t file, const std::string& group, const Predictions& p, const fs::path& path) {
  const at::Tensor labels = p.labels.to(torch::kCPU, torch::kLong).contiguous();
  const at::Tensor classes = p.top_classes.to(torch::kCPU, torch::kLong).contiguous();
  const at::Tensor scores = p.top_scores.to(torch::kCPU, torch::kFloat).contiguous();
  const auto n = static_cast<hsize_t>(labels.numel());
  const auto k = static_cast<hsize_t>(classes.dim() == 2 ? classes.size(1) : 0);
  QL_CHECK(classes.numel() == static_cast<std::int64_t>(n * k) && scores.sizes() == classes.sizes(),
           "predictions of '{}': {} labels but classes [{}] and scores [{}]", group, n,
           fmt::join(classes.sizes(), ", "), fmt::join(scores.sizes(), ", "));
  std::vector<std::int64_t> index(n);
  std::iota(index.begin(), index.end(), 0);
  write_array(file, group + "/index", H5T_NATIVE_INT64, {n}, index.data(), path);
  write_array(file, group + "/label", H5T_NATIVE_INT64, {n}, labels.data_ptr<std::int64_t>(), path);
  write_array(file, group + "/top_classes", H5T_NATIVE_INT64, {n, k}, classes.data_ptr<std::int64_t>(), path);
  write_array(file, group + "/top_scores", H5T_NATIVE_FLOAT, {n, k}, scores.data_ptr<float>(), path);
}

}  // namespace

std::string confusion_csv(const Predictions& predictions, const std::vector<std::string>& class_names) {
  const auto classes = static_cast<std::int64_t>(class_names.size());
  const at::Tensor labels = predictions.labels.to(torch::kLong);
  const at::Tensor predicted = predictions.top_classes.select(1, 0).to(torch::kLong);
  QL_CHECK(classes > 0 && labels.numel() > 0 && labels.max().item<std::int64_t>() < classes &&
               predicted.max().item<std::int64_t>() < classes && labels.min().item<std::int64_t>() >= 0,
           "confusion matrix: predictions outside the {} classes", classes);
  const at::Tensor counts = torch::bincount(labels * classes + predicted, {}, classes * classes).view({classes, classes});
  const auto c = counts.accessor<std::int64_t, 2>();
  std::vector<std::string> columns{"label"};
  columns.insert(columns.end(), class_names.begin(), class_names.end());
  std::vector<std::vector<std::string>> rows;
  for (std::int64_t i = 0; i < classes; ++i) {
    std::vector<std::string> row{class_names[static_cast<std::size_t>(i)]};
    for (std::int64_t j = 0; j < classes; ++j) row.push_back(std::to_string(c[i][j]));
    rows.push_back(std::move(row));
  }
  return csv_table(columns, rows);
}

void write_predictions_h5(const fs::path& path, const std::string& split,
                          const std::vector<std::pair<std::string, Predictions>>& networks) {
  silence_hdf5();
  write_atomically(path, [&](const fs::path& temporary) {
    Handle file(H5Fcreate(temporary.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    QL_CHECK(file.valid(), "{}: cannot create the HDF5 file", temporary.string());
    write_text_attribute(file.get(), "split", split, path);
    for (const auto& [name, predictions] : networks) write_group(file.get(), name, predictions, path);
    check(H5Fflush(file.get(), H5F_SCOPE_GLOBAL), "flush", temporary);
  });
}

}  // namespace ql::core
