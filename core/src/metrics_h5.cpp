// metrics.h5 through the HDF5 C library: one compound dataset per scalar series and a group of
// arrays per histogram series.
#include "quantlab/core/experiment_store.hpp"
#include "quantlab/core/metrics_log.hpp"
#include "quantlab/sdk/error.hpp"

#include "hdf5_support.hpp"

#include <fmt/format.h>
#include <hdf5.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

namespace ql::core {

namespace fs = std::filesystem;
using namespace hdf5;

namespace {

struct ScalarRecord {
  std::int64_t step;
  double wall_time;
  double value;
};

Handle scalar_type() {
  Handle type(H5Tcreate(H5T_COMPOUND, sizeof(ScalarRecord)), H5Tclose);
  H5Tinsert(type.get(), "step", HOFFSET(ScalarRecord, step), H5T_NATIVE_INT64);
  H5Tinsert(type.get(), "wall_time", HOFFSET(ScalarRecord, wall_time), H5T_NATIVE_DOUBLE);
  H5Tinsert(type.get(), "value", HOFFSET(ScalarRecord, value), H5T_NATIVE_DOUBLE);
  return type;
}

struct Visit {
  std::vector<std::string> datasets;
};

herr_t collect_dataset(hid_t, const char* name, const H5O_info_t* info, void* data) {
  if (info->type == H5O_TYPE_DATASET) static_cast<Visit*>(data)->datasets.emplace_back(name);
  return 0;
}

constexpr char kHistograms[] = "histograms/";
constexpr std::string_view kMetricsMagic = "QLH5";

}  // namespace

namespace {

void write_hdf5(const fs::path& temporary, const fs::path& path, const MetricsData& data) {
  {
    Handle file(H5Fcreate(temporary.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    QL_CHECK(file.valid(), "{}: cannot create the HDF5 file", temporary.string());
    Handle type = scalar_type();
    for (const auto& [name, points] : data.scalars) {
      std::vector<ScalarRecord> records;
      records.reserve(points.size());
      for (const ScalarPoint& p : points) records.push_back({p.step, p.wall_time, p.value});
      write_array(file.get(), name, type.get(), {records.size()}, records.data(), path);
    }
    for (const auto& [name, points] : data.histograms) {
      const std::string group = kHistograms + name + "/";
      const std::size_t bins = points.empty() ? 0 : points.front().counts.size();
      std::vector<std::int64_t> steps;
      std::vector<double> times, edges, counts;
      for (const HistogramPoint& p : points) {
        QL_CHECK(p.counts.size() == bins && p.bin_edges.size() == bins + 1,
                 "histogram {} changes its number of bins", name);
        steps.push_back(p.step);
        times.push_back(p.wall_time);
        edges.insert(edges.end(), p.bin_edges.begin(), p.bin_edges.end());
        counts.insert(counts.end(), p.counts.begin(), p.counts.end());
      }
      const hsize_t k = points.size();
      write_array(file.get(), group + "step", H5T_NATIVE_INT64, {k}, steps.data(), path);
      write_array(file.get(), group + "wall_time", H5T_NATIVE_DOUBLE, {k}, times.data(), path);
      write_array(file.get(), group + "bin_edges", H5T_NATIVE_DOUBLE, {k, bins + 1}, edges.data(), path);
      write_array(file.get(), group + "counts", H5T_NATIVE_DOUBLE, {k, bins}, counts.data(), path);
    }
    check(H5Fflush(file.get(), H5F_SCOPE_GLOBAL), "flush", temporary);
  }
}

}  // namespace

void write_metrics_h5(const fs::path& path, const MetricsData& data) {
  silence_hdf5();
  write_atomically(path, [&](const fs::path& temporary) {
    write_hdf5(temporary, path, data);
    // The checksum trailer (HDF5 readers ignore bytes past the file's end address).
    const std::string content = read_text_file(temporary);
    std::ofstream out(temporary, std::ios::binary | std::ios::app);
    out << checksum_trailer(kMetricsMagic, content);
    out.flush();
    QL_CHECK(out.good(), "cannot write {}: {}", path.string(), std::strerror(errno));
  });
}

MetricsData read_metrics_h5(const fs::path& path) {
  silence_hdf5();
  QL_CHECK(fs::is_regular_file(path), "{}: no such file", path.string());
  // The trailer first: HDF5 itself may crash on a corrupt file (fuzz_metrics_h5 found one).
  checked_length(path, read_text_file(path), kMetricsMagic, "metrics file");
  QL_CHECK(H5Fis_hdf5(path.c_str()) > 0, "{}: not an HDF5 file (truncated or corrupt?)", path.string());
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  QL_CHECK(file.valid(), "{}: cannot open the HDF5 file", path.string());
  Visit visit;
  check(H5Ovisit2(file.get(), H5_INDEX_NAME, H5_ITER_INC, collect_dataset, &visit, H5O_INFO_BASIC),
        "list the datasets", path);

  MetricsData data;
  Handle type = scalar_type();
  const std::string prefix = kHistograms;
  for (const std::string& name : visit.datasets) {
    std::vector<hsize_t> dims;
    if (name.rfind(prefix, 0) != 0) {
      const auto records = read_array<ScalarRecord>(file.get(), name, type.get(), dims, path);
      auto& points = data.scalars[name];
      for (const ScalarRecord& r : records) points.push_back({r.step, r.wall_time, r.value});
      continue;
    }
    const auto slash = name.rfind('/');
    if (name.compare(slash, std::string::npos, "/counts") != 0) continue;
    const std::string group = name.substr(0, slash + 1);
    const auto steps = read_array<std::int64_t>(file.get(), group + "step", H5T_NATIVE_INT64, dims, path);
    const auto times = read_array<double>(file.get(), group + "wall_time", H5T_NATIVE_DOUBLE, dims, path);
    std::vector<hsize_t> edge_dims, count_dims;
    const auto edges = read_array<double>(file.get(), group + "bin_edges", H5T_NATIVE_DOUBLE, edge_dims, path);
    const auto counts = read_array<double>(file.get(), group + "counts", H5T_NATIVE_DOUBLE, count_dims, path);
    const std::size_t k = steps.size();
    QL_CHECK(times.size() == k && edge_dims.size() == 2 && count_dims.size() == 2 && edge_dims[0] == k &&
                 count_dims[0] == k && edge_dims[1] == count_dims[1] + 1,
             "{}: histogram group {} has inconsistent shapes", path.string(), group);
    const std::size_t bins = count_dims[1];
    auto& points = data.histograms[group.substr(prefix.size(), group.size() - prefix.size() - 1)];
    for (std::size_t i = 0; i < k; ++i) {
      HistogramPoint p;
      p.step = steps[i];
      p.wall_time = times[i];
      p.bin_edges.assign(edges.begin() + static_cast<std::ptrdiff_t>(i * (bins + 1)),
                         edges.begin() + static_cast<std::ptrdiff_t>((i + 1) * (bins + 1)));
      p.counts.assign(counts.begin() + static_cast<std::ptrdiff_t>(i * bins),
                      counts.begin() + static_cast<std::ptrdiff_t>((i + 1) * bins));
      p.min = p.bin_edges.front();
      p.max = p.bin_edges.back();
      for (double c : p.counts) p.num += c;
      points.push_back(std::move(p));
    }
  }
  return data;
}

void MetricsData::truncate_after(std::int64_t step) {
  for (auto& [name, points] : scalars) {
    points.erase(std::remove_if(points.begin(), points.end(), [&](const ScalarPoint& p) { return p.step > step; }),
                 points.end());
  }
  for (auto& [name, points] : histograms) {
    points.erase(
        std::remove_if(points.begin(), points.end(), [&](const HistogramPoint& p) { return p.step > step; }),
        points.end());
  }
}

}  // namespace ql::core
