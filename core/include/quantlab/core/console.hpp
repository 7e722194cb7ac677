// The terminal: log lines on stdout, warnings on stderr, and a progress line that redraws
// itself on a terminal and is left out when output goes to a file or pipe.
//
//   Console console;
//   console.info("epoch 1/10 ...");
//   console.progress("train", 120, 469);
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

namespace ql::core {

class Console {
 public:
  Console();
  /// Only warnings, each after `prefix` (the other ranks of a data-parallel run: "rank 2: ").
  void quiet(std::string prefix);
  void info(std::string_view line);
  void warn(std::string_view line);
  /// Redraws the progress line (terminal only); a following info/warn line replaces it.
  void progress(std::string_view what, std::int64_t done, std::int64_t total,
                std::string_view detail = {});

 private:
  void clear_progress();
  std::mutex mutex_;
  bool terminal_;
  bool progress_shown_ = false;
  bool quiet_ = false;
  std::string prefix_;
};

}  // namespace ql::core
