// Cross-request batching for an expert shard. Calls for the same expert that arrive while that
// expert is busy are queued; when it frees up, one of the waiting callers (the "leader") runs
// everything queued — up to max_batch_tokens tokens — as one FFN call, so concurrent requests'
// tokens meet in one GEMM and the expert's weights are read once for all of them. An idle expert
// runs a call at once: nothing waits when nothing else is queued (unless max_wait > 0 asks the
// leader to linger for more tokens). No extra threads: callers do the work.
//
// At most `concurrent_ffn` FFN calls run at once across all experts (each one uses every core
// the kernels are given): a small expert FFN is bound by memory bandwidth, so running several at
// once only splits the bandwidth, while queueing lets the waiting experts' batches grow. The
// limit applies with batching on or off.
//
// Thread-safe. Results are scattered back to each caller's own output.
#ifndef MOE_EXPERT_SERVICE_EXPERT_BATCHER_H_
#define MOE_EXPERT_SERVICE_EXPERT_BATCHER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/tensor/matrix.h"

namespace moe {

struct BatchingOptions {
  int max_batch_tokens = 256;  // 0 turns batching off: every call computes on its own
  absl::Duration max_wait = absl::ZeroDuration();  // how long a leader lingers for more tokens
  int concurrent_ffn = 1;  // FFN calls running at once across experts; 0 = unlimited
};

struct BatchingStats {
  int64_t batches = 0;        // FFN calls made
  int64_t calls = 0;          // Compute calls served
  int64_t tokens = 0;         // tokens computed
  int64_t largest_batch = 0;  // most tokens in one FFN call
};

class ExpertBatcher {
 public:
  // Computes y = expert(x) for one expert; must be thread-safe.
  using ComputeFn = std::function<absl::Status(int expert, ConstMatrixView x, MatrixView y)>;

  ExpertBatcher(ComputeFn compute, BatchingOptions options);

  // Blocks until y = expert(x) is computed (possibly within a larger batch).
  absl::Status Compute(int expert, ConstMatrixView x, MatrixView y);

  BatchingStats stats() const;

 private:
  struct Call {
    ConstMatrixView x;
    MatrixView y;
    bool done = false;
    absl::Status status;
  };
  struct Queue {
    std::deque<Call*> pending;
    bool busy = false;
  };

  // Runs `batch` as one FFN call (or the single call as is) and records each call's status.
  void RunBatch(int expert, const std::vector<Call*>& batch);
  std::vector<Call*> TakeBatch(Queue& queue) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AcquireSlot() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseSlot() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t PendingTokens(const Queue& queue) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ComputeFn compute_;
  const BatchingOptions options_;
  mutable absl::Mutex mu_;
  std::map<int, Queue> queues_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;  // FFN calls in progress
  BatchingStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moe

#endif  // MOE_EXPERT_SERVICE_EXPERT_BATCHER_H_
