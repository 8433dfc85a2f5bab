// Admission control for server handlers: at most `limit` calls run at once; a call beyond that is
// refused at once with RESOURCE_EXHAUSTED ("overloaded: N calls in flight, limit M") instead of
// queueing for a thread, so the caller can try another replica while its deadline still allows.
//
//   grpc::Status Compute(...) {
//     auto ticket = gate_->TryEnter();
//     if (!ticket.ok()) return ToGrpcStatus(ticket.status());   // first thing in the handler
//     ...                                                       // the ticket leaves on return
//   }
//
// The limit must stay below the server's thread cap (ServeOptions::max_threads, see
// CheckAdmissionLimit) so that a thread is always free to say no. Thread-safe and lock-free.
// gRPC has the thread cap (ResourceQuota) but no per-service concurrency limit, hence this class.
#ifndef MOE_COMMON_RPC_ADMISSION_GATE_H_
#define MOE_COMMON_RPC_ADMISSION_GATE_H_

#include <atomic>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace moe {

class AdmissionGate {
 public:
  // An admitted call; leaves the gate when destroyed. Move-only.
  class Ticket {
   public:
    Ticket(Ticket&& other) noexcept : gate_(other.gate_) { other.gate_ = nullptr; }
    Ticket& operator=(Ticket&& other) noexcept;
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    ~Ticket() { Leave(); }

   private:
    friend class AdmissionGate;
    explicit Ticket(AdmissionGate* gate) : gate_(gate) {}
    void Leave();
    AdmissionGate* gate_;
  };

  // limit <= 0 admits everything (the counters still count).
  explicit AdmissionGate(int limit) : limit_(limit) {}
  AdmissionGate(const AdmissionGate&) = delete;
  AdmissionGate& operator=(const AdmissionGate&) = delete;

  // A ticket, or RESOURCE_EXHAUSTED naming the calls in flight and the limit.
  absl::StatusOr<Ticket> TryEnter();

  int limit() const { return limit_; }
  int64_t in_flight() const { return in_flight_.load(std::memory_order_relaxed); }
  int64_t admitted() const { return admitted_.load(std::memory_order_relaxed); }
  int64_t rejected() const { return rejected_.load(std::memory_order_relaxed); }

 private:
  const int limit_;
  std::atomic<int64_t> in_flight_{0};
  std::atomic<int64_t> admitted_{0};
  std::atomic<int64_t> rejected_{0};
};

// Threads a sync server keeps for polling and for refusing calls beyond the admission limit.
inline constexpr int kReservedServerThreads = 4;

// InvalidArgument unless 0 < limit <= max_threads - kReservedServerThreads (or limit <= 0 with
// max_threads <= 0: neither bounded), with a message naming both flags' values.
absl::Status CheckAdmissionLimit(int limit, int max_threads);

}  // namespace moe

#endif  // MOE_COMMON_RPC_ADMISSION_GATE_H_
