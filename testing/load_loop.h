// Closed-loop load on a real router for fault-injection tests: `threads` client threads each
// send Forward after Forward (the same request, a fixed deadline per call) until Stop(), and
// every call's end time and status code are recorded, so a test can count failures and
// requests/s in any time window (before a fault, during it, after it).
// Thread-safe; Stop() joins the threads (each ends within one call deadline).
#ifndef MOE_TESTING_LOAD_LOOP_H_
#define MOE_TESTING_LOAD_LOOP_H_

#include <grpcpp/grpcpp.h>

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "moe/v1/router.grpc.pb.h"

namespace moe::testing {

class LoadLoop {
 public:
  struct Call {
    absl::Time end;
    grpc::StatusCode code;
    std::string message;
  };

  LoadLoop(const std::string& router_target, const v1::ForwardRequest& request, int threads,
           absl::Duration deadline);
  ~LoadLoop() { Stop(); }

  void Stop();

  // Successful calls per second among those that ended in [from, to).
  double OkRate(absl::Time from, absl::Time to) const;
  // Calls that ended in [from, to) without OK.
  std::vector<Call> Failures(absl::Time from = absl::InfinitePast(),
                             absl::Time to = absl::InfiniteFuture()) const;
  int64_t Calls() const;
  // "OK: 120, UNAVAILABLE: 2" with the first message of each failing code.
  std::string Summary() const;

 private:
  void Run();

  std::shared_ptr<grpc::Channel> channel_;
  const v1::ForwardRequest request_;
  const absl::Duration deadline_;
  std::vector<std::thread> threads_;
  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<Call> calls_ ABSL_GUARDED_BY(mu_);
};

// Threads of process `pid` (/proc/PID/status "Threads:"), or -1 if it cannot be read.
int ThreadCount(int pid);
// Peak resident memory of `pid` in KiB (/proc/PID/status "VmHWM:"), or -1.
int64_t PeakRssKib(int pid);

}  // namespace moe::testing

#endif  // MOE_TESTING_LOAD_LOOP_H_
