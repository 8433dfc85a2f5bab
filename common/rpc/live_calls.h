// Counts a gRPC server's calls in flight, from the moment the server matches a call to a method
// until the call object is gone (its interceptor's lifetime), so that a drain can tell when only
// idle connections are left: gRPC's Server::Shutdown also waits for every client connection to
// close, and a client that keeps an idle channel open (every router keeps one to each of its
// shards, a pooled client or load balancer too) held a drain for its whole timeout.
//
//   auto live = std::make_shared<LiveCalls>();
//   interceptors.push_back(live->InterceptorFactory());  // before BuildAndStart
//   ...
//   if (live->AwaitNone(deadline)) { /* no call left: close the idle connections */ }
//
// Thread-safe; the factory keeps the LiveCalls alive as long as the server keeps the factory.
#ifndef MOE_COMMON_RPC_LIVE_CALLS_H_
#define MOE_COMMON_RPC_LIVE_CALLS_H_

#include <grpcpp/support/server_interceptor.h>

#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace moe {

class LiveCalls : public std::enable_shared_from_this<LiveCalls> {
 public:
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> InterceptorFactory();

  // Blocks until no call is in flight (true) or `deadline` passes with some still running (false).
  bool AwaitNone(absl::Time deadline);

  void Started();
  void Ended();

 private:
  absl::Mutex mu_;
  int live_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace moe

#endif  // MOE_COMMON_RPC_LIVE_CALLS_H_
