#include "quantlab/core/process.hpp"

#include "quantlab/sdk/error.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace ql::core {

namespace {

std::vector<char*> c_arguments(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  return args;
}

// File actions of posix_spawn, destroyed with the object.
class SpawnActions {
 public:
  SpawnActions() { posix_spawn_file_actions_init(&actions_); }
  ~SpawnActions() { posix_spawn_file_actions_destroy(&actions_); }
  posix_spawn_file_actions_t* get() { return &actions_; }

 private:
  posix_spawn_file_actions_t actions_;
};

}  // namespace

int wait_for(pid_t child) {
  int status = 0;
  while (::waitpid(child, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

std::pair<int, std::string> capture_output(const std::vector<std::string>& argv) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return {-1, {}};
  SpawnActions actions;
  posix_spawn_file_actions_adddup2(actions.get(), pipe_fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addopen(actions.get(), STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  auto args = c_arguments(argv);
  pid_t child = 0;
  const int started = ::posix_spawnp(&child, args[0], actions.get(), nullptr, args.data(), environ);
  ::close(pipe_fds[1]);
  std::string out;
  if (started == 0) {
    char buffer[4096];
    ssize_t n = 0;
    while ((n = ::read(pipe_fds[0], buffer, sizeof buffer)) != 0) {
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) break;
      out.append(buffer, static_cast<std::size_t>(n));
    }
  }
  ::close(pipe_fds[0]);
  if (started != 0) return {-1, {}};
  const int code = wait_for(child);
  return {code >= 128 ? -1 : code, out};
}

pid_t spawn(const std::vector<std::string>& argv, const std::filesystem::path& log) {
  SpawnActions actions;
  posix_spawn_file_actions_addopen(actions.get(), STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0666);
  posix_spawn_file_actions_adddup2(actions.get(), STDOUT_FILENO, STDERR_FILENO);
  auto args = c_arguments(argv);
  pid_t child = 0;
  const int error = ::posix_spawnp(&child, args[0], actions.get(), nullptr, args.data(), environ);
  QL_CHECK(error == 0, "cannot start {}: {}", argv[0], std::strerror(error));
  return child;
}

pid_t spawn_with_environment(const std::vector<std::string>& argv,
                             const std::vector<std::pair<std::string, std::string>>& environment) {
  std::vector<std::string> entries;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string text(*entry);
    const std::string name = text.substr(0, text.find('='));
    const bool replaced = std::any_of(environment.begin(), environment.end(),
                                      [&](const auto& variable) { return variable.first == name; });
    if (!replaced) entries.push_back(text);
  }
  for (const auto& [name, value] : environment) entries.push_back(name + "=" + value);
  auto envp = c_arguments(entries);
  // The child starts with no signal blocked and default dispositions, whatever the caller set.
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setsigdefault(&attributes, &all);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  auto args = c_arguments(argv);
  pid_t child = 0;
  const int error = ::posix_spawnp(&child, args[0], nullptr, &attributes, args.data(), envp.data());
  posix_spawnattr_destroy(&attributes);
  QL_CHECK(error == 0, "cannot start {}: {}", argv[0], std::strerror(error));
  return child;
}

std::filesystem::path current_executable() {
  std::error_code error;
  return std::filesystem::read_symlink("/proc/self/exe", error);
}

}  // namespace ql::core
