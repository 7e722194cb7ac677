// Stopping a run by SIGINT/SIGTERM: the handler only sets a flag, which the training loop
// polls after every step (and, across data-parallel ranks, agrees on through a collective).
#pragma once

#include <csignal>
#include <string>

namespace ql::core {
class DataParallel;
}

namespace ql::core::run {

/// Installs the SIGINT/SIGTERM handlers for its lifetime. They are one-shot: a second Ctrl-C
/// kills the process the usual way.
class StopOnSignals {
 public:
  StopOnSignals();
  ~StopOnSignals();
  StopOnSignals(const StopOnSignals&) = delete;
  StopOnSignals& operator=(const StopOnSignals&) = delete;
  /// The signal that asked the run to stop, 0 for none.
  static int requested();

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

/// Whether this process, or with `world` any rank, was asked to stop (a collective: every
/// rank gets the same answer).
bool stop_agreed(DataParallel* world);

/// "stopped by signal N", or "stopped with another rank" when this process got none.
std::string stopped_by();

}  // namespace ql::core::run
