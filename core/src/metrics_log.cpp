#include "quantlab/core/metrics_log.hpp"

#include "quantlab/core/unit_record.hpp"
#include "quantlab/sdk/error.hpp"
#include "proto/tensorboard_event.pb.h"

#include <boost/crc.hpp>
#include <fmt/format.h>
#include <torch/types.h>

#include <chrono>
#include <cstdio>
#include <unistd.h>

namespace ql::core {

namespace fs = std::filesystem;

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

HistogramPoint histogram_of(const at::Tensor& values, int bins, std::int64_t step, double wall_time) {
  const at::Tensor v = values.detach().to(torch::kCPU, torch::kFloat64).flatten();
  HistogramPoint h;
  h.step = step;
  h.wall_time = wall_time;
  if (v.numel() == 0) return h;
  h.min = v.min().item<double>();
  h.max = v.max().item<double>();
  h.num = static_cast<double>(v.numel());
  h.sum = v.sum().item<double>();
  h.sum_squares = v.square().sum().item<double>();
  // A constant tensor gets one bin of width 1 around its value, so the edges stay increasing.
  const double low = h.min < h.max ? h.min : h.min - 0.5;
  const double high = h.min < h.max ? h.max : h.max + 0.5;
  const at::Tensor counts = torch::histc(v, bins, low, high);
  h.counts.assign(counts.data_ptr<double>(), counts.data_ptr<double>() + bins);
  for (int i = 0; i <= bins; ++i) h.bin_edges.push_back(low + (high - low) * i / bins);
  return h;
}

std::uint32_t masked_crc32c(const void* data, std::size_t size) {
  // CRC-32C (Castagnoli), reflected, as TFRecord uses; then TensorFlow's mask.
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
  crc.process_bytes(data, size);
  const std::uint32_t value = crc.checksum();
  return ((value >> 15) | (value << 17)) + 0xa282ead8u;
}

struct EventFileWriter::File {
  std::FILE* handle = nullptr;
};

EventFileWriter::EventFileWriter(const fs::path& dir, std::int64_t start_step) : file_(std::make_unique<File>()) {
  const double time = now_seconds();
  path_ = dir / fmt::format("events.out.tfevents.{}.{}.{}", static_cast<std::int64_t>(time), host_name(),
                            ::getpid());
  file_->handle = std::fopen(path_.c_str(), "wb");
  QL_CHECK(file_->handle != nullptr, "cannot create {}", path_.string());
  tensorflow::Event version;
  version.set_wall_time(time);
  version.set_file_version("brain.Event:2");
  write_record(version.SerializeAsString());
  if (start_step >= 0) {
    tensorflow::Event start;
    start.set_wall_time(time);
    start.set_step(start_step);
    start.mutable_session_log()->set_status(tensorflow::SessionLog::START);
    write_record(start.SerializeAsString());
  }
}

EventFileWriter::~EventFileWriter() {
  if (file_->handle) std::fclose(file_->handle);
}

void EventFileWriter::write_record(const std::string& bytes) {
  char header[12];
  const std::uint64_t length = bytes.size();
  for (int i = 0; i < 8; ++i) header[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  const std::uint32_t length_crc = masked_crc32c(header, 8);
  const std::uint32_t data_crc = masked_crc32c(bytes.data(), bytes.size());
  for (int i = 0; i < 4; ++i) header[8 + i] = static_cast<char>((length_crc >> (8 * i)) & 0xff);
  char footer[4];
  for (int i = 0; i < 4; ++i) footer[i] = static_cast<char>((data_crc >> (8 * i)) & 0xff);
  const bool ok = std::fwrite(header, 1, sizeof header, file_->handle) == sizeof header &&
                  std::fwrite(bytes.data(), 1, bytes.size(), file_->handle) == bytes.size() &&
                  std::fwrite(footer, 1, sizeof footer, file_->handle) == sizeof footer;
  QL_CHECK(ok, "cannot write {} (disk full?)", path_.string());
}

void EventFileWriter::scalar(std::string_view tag, double value, std::int64_t step, double wall_time) {
  tensorflow::Event event;
  event.set_wall_time(wall_time);
  event.set_step(step);
  auto* entry = event.mutable_summary()->add_value();
  entry->set_tag(std::string(tag));
  entry->set_simple_value(static_cast<float>(value));
  write_record(event.SerializeAsString());
}

void EventFileWriter::histogram(std::string_view tag, const HistogramPoint& h) {
  tensorflow::Event event;
  event.set_wall_time(h.wall_time);
  event.set_step(h.step);
  auto* entry = event.mutable_summary()->add_value();
  entry->set_tag(std::string(tag));
  auto* histo = entry->mutable_histo();
  histo->set_min(h.min);
  histo->set_max(h.max);
  histo->set_num(h.num);
  histo->set_sum(h.sum);
  histo->set_sum_squares(h.sum_squares);
  for (std::size_t i = 0; i < h.counts.size(); ++i) {
    histo->add_bucket_limit(h.bin_edges[i + 1]);
    histo->add_bucket(h.counts[i]);
  }
  write_record(event.SerializeAsString());
}

void EventFileWriter::flush() {
  QL_CHECK(std::fflush(file_->handle) == 0, "cannot write {} (disk full?)", path_.string());
}

MetricsLog::MetricsLog(fs::path dir, std::int64_t resume_step) : dir_(std::move(dir)) {
  const fs::path file = dir_ / "metrics.h5";
  if (resume_step >= 0 && fs::exists(file)) {
    data_ = read_metrics_h5(file);
    data_.truncate_after(resume_step);
  }
  // The resumed run's first new step is resume_step + 1: TensorBoard then drops exactly the
  // events metrics.h5 forgot.
  events_ = std::make_unique<EventFileWriter>(dir_, resume_step >= 0 ? resume_step + 1 : -1);
}

MetricsLog::~MetricsLog() = default;

void MetricsLog::scalar(std::string_view name, double value, std::int64_t step) {
  const double time = now_seconds();
  data_.scalars[std::string(name)].push_back({step, time, value});
  events_->scalar(name, value, step, time);
}

void MetricsLog::histogram(std::string_view name, const at::Tensor& values, std::int64_t step) {
  constexpr int kBins = 30;
  HistogramPoint h = histogram_of(values, kBins, step, now_seconds());
  if (h.counts.empty()) return;
  events_->histogram(name, h);
  data_.histograms[std::string(name)].push_back(std::move(h));
}

void MetricsLog::flush() {
  write_metrics_h5(dir_ / "metrics.h5", data_);
  events_->flush();
}

}  // namespace ql::core
