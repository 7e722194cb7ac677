// `qlhost run --nproc N`: N data-parallel ranks of one command on this host, as torchrun does
// it (RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), watched until they end.
//
//   int code = run_local_ranks({"/usr/bin/qlhost", "run", "exp.toml"}, 4, std::chrono::seconds(90), console);
#pragma once

#include "quantlab/core/console.hpp"

#include <chrono>
#include <string>
#include <vector>

namespace ql::core {

/// A TCP port on 127.0.0.1 that was free a moment ago.
int free_local_port();

/// Starts `argv` as `ranks` ranks and waits for them. When one fails, the others have `grace`
/// to end on their own (their collectives fail when a peer is gone), then are killed. A SIGTERM
/// to the launcher is passed on to the ranks; Ctrl-C reaches them directly from the terminal.
/// Returns 0, or the exit code of the first rank that failed (128 + signal when killed).
int run_local_ranks(const std::vector<std::string>& argv, int ranks, std::chrono::seconds grace, Console& console);

}  // namespace ql::core
