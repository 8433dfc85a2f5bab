#include "common/rpc/admission_gate.h"

#include "absl/strings/str_cat.h"

namespace moe {

AdmissionGate::Ticket& AdmissionGate::Ticket::operator=(Ticket&& other) noexcept {
  if (this != &other) {
    Leave();
    gate_ = other.gate_;
    other.gate_ = nullptr;
  }
  return *this;
}

void AdmissionGate::Ticket::Leave() {
  if (gate_ != nullptr) gate_->in_flight_.fetch_sub(1, std::memory_order_acq_rel);
  gate_ = nullptr;
}

absl::StatusOr<AdmissionGate::Ticket> AdmissionGate::TryEnter() {
  const int64_t now = in_flight_.fetch_add(1, std::memory_order_acq_rel) + 1;
  if (limit_ > 0 && now > limit_) {
    in_flight_.fetch_sub(1, std::memory_order_acq_rel);
    rejected_.fetch_add(1, std::memory_order_relaxed);
    return absl::ResourceExhaustedError(
        absl::StrCat("overloaded: ", now - 1, " calls in flight, limit ", limit_));
  }
  admitted_.fetch_add(1, std::memory_order_relaxed);
  return Ticket(this);
}

absl::Status CheckAdmissionLimit(int limit, int max_threads) {
  if (limit <= 0 && max_threads <= 0) return absl::OkStatus();
  if (limit <= 0 || max_threads <= 0 || limit > max_threads - kReservedServerThreads) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the admission limit (", limit, ") must be between 1 and the thread cap (", max_threads,
        ") minus ", kReservedServerThreads,
        " threads kept to refuse calls with; both must be set (or both 0 for unbounded)"));
  }
  return absl::OkStatus();
}

}  // namespace moe
