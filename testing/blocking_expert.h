// A fake moe.v1.Expert for tests of the server runtime: Compute passes the AdmissionGate, then
// blocks until Release(), or until the call is cancelled (unless told to ignore cancellation),
// or 20 s at most. Lets tests hold calls in flight on purpose. Thread-safe.
#ifndef MOE_TESTING_BLOCKING_EXPERT_H_
#define MOE_TESTING_BLOCKING_EXPERT_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/rpc/admission_gate.h"
#include "moe/v1/expert.grpc.pb.h"

namespace moe::testing {

class BlockingExpert final : public v1::Expert::Service {
 public:
  // `gate` may be null (no limit).
  explicit BlockingExpert(AdmissionGate* gate = nullptr, bool honour_cancellation = true)
      : gate_(gate), honour_cancellation_(honour_cancellation) {}

  // OK once released; CANCELLED if the call was cancelled first; DEADLINE_EXCEEDED after 20 s.
  grpc::Status Compute(grpc::ServerContext* context, const v1::ComputeRequest* request,
                       v1::ComputeResponse* response) override;

  // Lets every blocked and future call return OK.
  void Release();
  // True once `n` calls have entered Compute (past the gate), false after `timeout`.
  bool WaitForEntered(int n, absl::Duration timeout);

 private:
  AdmissionGate* const gate_;
  const bool honour_cancellation_;
  absl::Mutex mu_;
  bool released_ ABSL_GUARDED_BY(mu_) = false;
  int entered_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace moe::testing

#endif  // MOE_TESTING_BLOCKING_EXPERT_H_
