#include "quantlab/core/local_launcher.hpp"

#include "quantlab/core/process.hpp"
#include "quantlab/sdk/error.hpp"

#include <fmt/format.h>

#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <map>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace ql::core {

int free_local_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  QL_CHECK(fd >= 0, "cannot open a socket: {}", std::strerror(errno));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
  const int error = errno;
  ::close(fd);
  QL_CHECK(ok, "cannot find a free port on 127.0.0.1: {}", std::strerror(error));
  return ntohs(address.sin_port);
}

namespace {

// Blocks SIGINT, SIGTERM and SIGCHLD while the launcher waits, so that it can take them with
// sigtimedwait instead of a handler; restores the mask on exit.
class BlockedSignals {
 public:
  BlockedSignals() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &set_, &old_);
  }
  ~BlockedSignals() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
  BlockedSignals(const BlockedSignals&) = delete;
  BlockedSignals& operator=(const BlockedSignals&) = delete;
  // The signal that arrived within `timeout`, or 0.
  int wait(std::chrono::milliseconds timeout) const {
    timespec wait_for{static_cast<time_t>(timeout.count() / 1000), static_cast<long>(timeout.count() % 1000) * 1'000'000};
    const int signal = sigtimedwait(&set_, nullptr, &wait_for);
    return signal > 0 ? signal : 0;
  }

 private:
  sigset_t set_{};
  sigset_t old_{};
};

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with code {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return "ended";
}

int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

int run_local_ranks(const std::vector<std::string>& argv, int ranks, std::chrono::seconds grace, Console& console) {
  QL_CHECK(ranks >= 1, "--nproc {}: expected at least 1", ranks);
  const int port = free_local_port();
  BlockedSignals signals;
  std::map<pid_t, int> running;  // pid -> rank
  for (int rank = 0; rank < ranks; ++rank) {
    try {
      const pid_t child = spawn_with_environment(argv, {{"RANK", std::to_string(rank)},
                                                        {"WORLD_SIZE", std::to_string(ranks)},
                                                        {"LOCAL_RANK", std::to_string(rank)},
                                                        {"LOCAL_WORLD_SIZE", std::to_string(ranks)},
                                                        {"MASTER_ADDR", "127.0.0.1"},
                                                        {"MASTER_PORT", std::to_string(port)}});
      running[child] = rank;
    } catch (const std::exception&) {
      for (const auto& [pid, r] : running) ::kill(pid, SIGKILL);
      for (const auto& [pid, r] : running) wait_for(pid);
      throw;
    }
  }
  int first_failure = 0;
  auto deadline = std::chrono::steady_clock::time_point::max();
  while (!running.empty()) {
    int status = 0;
    const pid_t done = ::waitpid(-1, &status, WNOHANG);
    if (done > 0 && running.count(done) != 0) {
      const int rank = running[done];
      running.erase(done);
      if (exit_code(status) != 0 && first_failure == 0) {
        first_failure = exit_code(status);
        if (WIFSIGNALED(status)) console.warn(fmt::format("rank {} of {} {}", rank, ranks, describe_exit(status)));
        deadline = std::chrono::steady_clock::now() + grace;
      }
      continue;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      for (const auto& [pid, rank] : running) {
        console.warn(fmt::format("rank {} of {} still running {} s after rank failure; killing it", rank, ranks,
                                 grace.count()));
        ::kill(pid, SIGKILL);
      }
      deadline = std::chrono::steady_clock::time_point::max();
    }
    if (signals.wait(std::chrono::milliseconds(200)) == SIGTERM) {
      for (const auto& [pid, rank] : running) ::kill(pid, SIGTERM);
    }
  }
  return first_failure;
}

}  // namespace ql::core
