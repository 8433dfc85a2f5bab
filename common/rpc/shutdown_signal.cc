#include "common/rpc/shutdown_signal.h"

#include <pthread.h>
#include <signal.h>

#include <cstdlib>
#include <iostream>
#include <thread>

#include "absl/synchronization/notification.h"

namespace moe {
namespace {

sigset_t ShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

void BlockShutdownSignals() {
  sigset_t set = ShutdownSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForShutdownSignal() {
  sigset_t set = ShutdownSignals();
  int signal = 0;
  // sigwait fails only for an invalid set; bounded so a broken libc cannot spin forever.
  for (int attempt = 0; attempt < 1000 && sigwait(&set, &signal) != 0; ++attempt) {
  }
  return signal;
}

int DrainOnShutdownSignal(GrpcServer& server, absl::Duration drain,
                          std::function<void()> at_drain_deadline) {
  const std::string& name = server.options().name;
  const int signal = WaitForShutdownSignal();
  std::cerr << name << ": signal " << signal << ", draining (NOT_SERVING, no new calls, up to "
            << absl::FormatDuration(drain) << " for calls in flight)" << std::endl;
  const absl::Time start = absl::Now();
  absl::Notification finished;
  std::thread deadline_watch([&] {
    if (!finished.WaitForNotificationWithTimeout(drain) && at_drain_deadline) at_drain_deadline();
  });
  const absl::Status drained = server.Drain(drain);
  finished.Notify();
  deadline_watch.join();
  if (!drained.ok()) {
    std::cerr << name << ": " << drained.message() << "; exiting now" << std::endl;
    std::_Exit(1);
  }
  std::cerr << name << ": drained in " << absl::FormatDuration(absl::Now() - start) << ", exiting"
            << std::endl;
  return 0;
}

}  // namespace moe
