// Clean shutdown on SIGINT / SIGTERM for the servers. BlockShutdownSignals() must run in main
// before any thread starts, so every thread inherits the mask and only WaitForShutdownSignal()
// (sigwait) ever receives the signal.
#ifndef MOE_COMMON_RPC_SHUTDOWN_SIGNAL_H_
#define MOE_COMMON_RPC_SHUTDOWN_SIGNAL_H_

namespace moe {

void BlockShutdownSignals();

// Blocks until SIGINT or SIGTERM arrives; returns the signal number.
int WaitForShutdownSignal();

}  // namespace moe

#endif  // MOE_COMMON_RPC_SHUTDOWN_SIGNAL_H_
