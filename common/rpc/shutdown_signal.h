// Clean shutdown on SIGINT / SIGTERM for the servers. BlockShutdownSignals() must run in main
// before any thread starts, so every thread inherits the mask and only WaitForShutdownSignal()
// (sigwait) ever receives the signal.
#ifndef MOE_COMMON_RPC_SHUTDOWN_SIGNAL_H_
#define MOE_COMMON_RPC_SHUTDOWN_SIGNAL_H_

#include <functional>

#include "absl/time/time.h"
#include "common/rpc/server_runner.h"

namespace moe {

void BlockShutdownSignals();

// Blocks until SIGINT or SIGTERM arrives; returns the signal number.
int WaitForShutdownSignal();

// The end of a server's main: waits for SIGINT or SIGTERM, then server.Drain(drain), and returns
// main's exit code (0). If the drain had to abandon handlers that ignored cancellation, the
// services they use cannot be destroyed, so the process ends here (std::_Exit(1)) instead, at
// most drain + kDrainAbandonGrace after the signal. `at_drain_deadline`, if set, runs when the
// drain time is up with calls still in flight (e.g. to cancel their outgoing calls).
int DrainOnShutdownSignal(GrpcServer& server, absl::Duration drain,
                          std::function<void()> at_drain_deadline = nullptr);

}  // namespace moe

#endif  // MOE_COMMON_RPC_SHUTDOWN_SIGNAL_H_
