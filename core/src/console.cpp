#include "quantlab/core/console.hpp"

#include <fmt/format.h>

#include <cstdio>
#include <unistd.h>

namespace ql::core {

Console::Console() : terminal_(isatty(fileno(stderr)) == 1) {}

void Console::quiet(std::string prefix) {
  std::lock_guard lock(mutex_);
  quiet_ = true;
  terminal_ = false;
  prefix_ = std::move(prefix);
}

void Console::clear_progress() {
  if (progress_shown_) {
    std::fputs("\r\033[K", stderr);
    progress_shown_ = false;
  }
}

void Console::info(std::string_view line) {
  std::lock_guard lock(mutex_);
  if (quiet_) return;
  clear_progress();
  fmt::print(stdout, "{}\n", line);
  std::fflush(stdout);
}

void Console::warn(std::string_view line) {
  std::lock_guard lock(mutex_);
  clear_progress();
  fmt::print(stderr, "{}warning: {}\n", prefix_, line);
}

void Console::progress(std::string_view what, std::int64_t done, std::int64_t total,
                       std::string_view detail) {
  if (!terminal_) return;
  std::lock_guard lock(mutex_);
  constexpr int kWidth = 30;
  const double fraction = total > 0 ? static_cast<double>(done) / static_cast<double>(total) : 0.0;
  const int filled = static_cast<int>(fraction * kWidth);
  fmt::print(stderr, "\r\033[K{} [{:=<{}}{:<{}}] {}/{} {}", what, "", filled, "", kWidth - filled,
             done, total, detail);
  std::fflush(stderr);
  progress_shown_ = true;
}

}  // namespace ql::core
