#include "testing/blocking_expert.h"

#include <optional>

#include "common/rpc/grpc_status.h"

namespace moe::testing {

grpc::Status BlockingExpert::Compute(grpc::ServerContext* context, const v1::ComputeRequest*,
                                     v1::ComputeResponse*) {
  std::optional<AdmissionGate::Ticket> ticket;
  if (gate_ != nullptr) {
    absl::StatusOr<AdmissionGate::Ticket> entered = gate_->TryEnter();
    if (!entered.ok()) return ToGrpcStatus(entered.status());
    ticket.emplace(std::move(*entered));
  }
  absl::MutexLock lock(&mu_);
  ++entered_;
  const absl::Time give_up = absl::Now() + absl::Seconds(20);
  // Cancellation has no condition to wait on, so it is polled every 5 ms.
  while (!released_ && absl::Now() < give_up) {
    if (honour_cancellation_ && context->IsCancelled()) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled while blocked");
    }
    mu_.AwaitWithTimeout(absl::Condition(&released_), absl::Milliseconds(5));
  }
  if (!released_) return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "never released");
  return grpc::Status::OK;
}

void BlockingExpert::Release() {
  absl::MutexLock lock(&mu_);
  released_ = true;
}

bool BlockingExpert::WaitForEntered(int n, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto entered = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return entered_ >= n; };
  return mu_.AwaitWithTimeout(absl::Condition(&entered), timeout);
}

}  // namespace moe::testing
