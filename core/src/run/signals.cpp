#include "run/signals.hpp"

#include "quantlab/core/data_parallel.hpp"

#include <fmt/format.h>

#include <atomic>

namespace ql::core::run {

namespace {

// The one piece of process-wide state a signal handler may touch.
std::atomic<int> stop_signal{0};

extern "C" void request_stop(int signal) { stop_signal.store(signal); }

}  // namespace

StopOnSignals::StopOnSignals() {
  stop_signal.store(0);
  struct sigaction action {};
  action.sa_handler = request_stop;
  action.sa_flags = SA_RESETHAND;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, &old_int_);
  sigaction(SIGTERM, &action, &old_term_);
}

StopOnSignals::~StopOnSignals() {
  sigaction(SIGINT, &old_int_, nullptr);
  sigaction(SIGTERM, &old_term_, nullptr);
}

int StopOnSignals::requested() { return stop_signal.load(); }

bool stop_agreed(DataParallel* world) {
  if (world == nullptr) return StopOnSignals::requested() != 0;
  std::vector<double> flag{StopOnSignals::requested() != 0 ? 1.0 : 0.0};
  world->all_reduce_sum(flag);
  return flag[0] > 0;
}

std::string stopped_by() {
  const int signal = StopOnSignals::requested();
  return signal != 0 ? fmt::format("stopped by signal {}", signal) : std::string("stopped with another rank");
}

}  // namespace ql::core::run
