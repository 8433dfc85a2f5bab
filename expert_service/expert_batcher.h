// Cross-request batching for an expert shard. Calls for the same expert that arrive while that
// expert is busy are queued; when it frees up, one of the waiting callers (the "leader") runs
// everything queued — up to max_batch_tokens tokens — as one FFN call, so concurrent requests'
// tokens meet in one GEMM and the expert's weights are read once for all of them. An idle expert
// runs a call at once: nothing waits when nothing else is queued (unless max_wait > 0 asks the
// leader to linger for more tokens). No threads of its own: callers do the work (and the kernel
// threads a call's groups are handed to, `across_threads` below). A call of several
// expert groups (ComputeGroups, top-k routing) queues them all at once, so each can join another
// caller's batch while the call works through the others.
//
// A call names its token rows (a request's tokens and the rows of one expert group); the leader
// gathers the rows of every call of a batch once, straight into one buffer laid out as the compute
// function reads in place (row_stride, zero padding: ExpertShard::input_stride()), so a token row
// is copied once on its way to the kernel. Outputs are scattered back to each call's y.
//
// At most `concurrent_ffn` FFN calls run at once across all experts (each one uses every core
// the kernels are given): a small expert FFN is bound by memory bandwidth, so running several at
// once only splits the bandwidth, while queueing lets the waiting experts' batches grow. The
// limit applies with batching on or off.
//
// A call of many groups may instead work through them on every kernel thread at once, one group
// per thread (`across_threads`, ExpertShard::RunAcrossThreads), each FFN call then on its thread
// alone: no hand-off between threads inside an FFN call, and each thread reads its own expert's
// weights from start to end. Such an FFN call counts as 1/kernel_threads of one against
// concurrent_ffn.
//
// A call may carry a deadline and a cancellation check (plain values, so this file stays free of
// gRPC): its wait for its expert or for an FFN slot ends at its deadline (RESOURCE_EXHAUSTED
// "overloaded: waited ..."), and a leader drops expired (DEADLINE_EXCEEDED) or cancelled
// (CANCELLED) calls from its batch instead of computing them. Cancellation is checked when a batch
// is taken, not while waiting: a cancelled call waits at most until then or its deadline.
//
// Thread-safe. A failed FFN call's status goes to every call of its batch.
#ifndef MOE_EXPERT_SERVICE_EXPERT_BATCHER_H_
#define MOE_EXPERT_SERVICE_EXPERT_BATCHER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/metrics/metric_cells.h"
#include "common/tensor/matrix.h"

namespace moe {

// Histograms the leaders observe (expert_service/expert_metrics.h); owned by a MetricRegistry.
struct BatcherMetrics {
  Histogram* batch_tokens = nullptr;        // tokens per FFN call
  Histogram* compute_seconds = nullptr;     // wall time of one FFN call
  Histogram* queue_wait_seconds = nullptr;  // per call: arrival until its FFN starts or it ends
};

struct BatchingOptions {
  int max_batch_tokens = 256;  // 0 turns batching off: every call computes on its own
  absl::Duration max_wait = absl::ZeroDuration();  // how long a leader lingers for more tokens
  int concurrent_ffn = 1;  // FFN calls running at once across experts; 0 = unlimited
  const BatcherMetrics* metrics = nullptr;  // null: not observed
  int kernel_threads = 1;  // threads one FFN call uses (its share of concurrent_ffn: see above)
  // Runs run(i) for each group i (its FFN id and tokens) of a call, groups on separate kernel
  // threads at once, and returns true; or returns false, having run none, when that would not
  // pay (ExpertShard::RunAcrossThreads). Unset: groups run one after the other.
  std::function<bool(absl::Span<const int> ffns, absl::Span<const int64_t> tokens,
                     absl::FunctionRef<void(size_t)> run)>
      across_threads = nullptr;
};

// Who still wants a call's answer. `cancelled` may be empty; if set it must be thread-safe and
// cheap (it is called under the batcher's lock).
struct CallLimits {
  absl::Time deadline = absl::InfiniteFuture();
  std::function<bool()> cancelled;
};

struct BatchingStats {
  int64_t batches = 0;        // FFN calls made
  int64_t calls = 0;          // Compute calls served
  int64_t tokens = 0;         // tokens computed
  int64_t largest_batch = 0;  // most tokens in one FFN call
  int64_t dropped = 0;        // calls ended without computing: expired, cancelled, waited too long
};

class ExpertBatcher {
 public:
  // Computes y = expert(x) for one expert; x rows are `row_stride` apart with zero padding.
  // Must be thread-safe.
  using ComputeFn = std::function<absl::Status(int expert, ConstMatrixView x, MatrixView y)>;

  // `row_stride` must be ≥ the width of every call's tokens.
  ExpertBatcher(ComputeFn compute, int64_t row_stride, BatchingOptions options);

  // Blocks until y = expert(tokens[rows]) is computed (possibly within a larger batch): y is
  // [rows.size(), tokens.cols]. The caller checks that rows are in [0, tokens.rows); tokens, rows
  // and y must stay valid until Compute returns. InvalidArgument if y or the token width does not
  // fit; DeadlineExceeded / Cancelled when dropped from a batch; ResourceExhausted when the
  // deadline passed while waiting; otherwise the status of the FFN call that computed these rows.
  absl::Status Compute(int expert, ConstMatrixView tokens, absl::Span<const int32_t> rows,
                       MatrixView y, const CallLimits& limits = {});

  // One expert group of a call: y = expert(tokens[rows]), as in Compute.
  struct Group {
    int expert;
    absl::Span<const int32_t> rows;
    MatrixView y;
  };
  // Computes every group of one call over the same tokens, as Compute does each. All groups join
  // their experts' queues at once, so a caller leading one of those experts takes this call's rows
  // into its batch while this call is still busy with an earlier group. Under top-k routing a
  // call holds k groups: computed one after the other, concurrent calls would rarely wait at the
  // same expert at the same time, and each would read the expert's weights again. Returns the
  // first failing group's status; the groups not computed by then are withdrawn (not computed).
  absl::Status ComputeGroups(ConstMatrixView tokens, absl::Span<const Group> groups,
                             const CallLimits& limits = {});

  BatchingStats stats() const;

  // Test seams (CONVENTIONS.md 9): deterministic tests without sleeps.
  struct TestHooks {
    // Runs on a leader's thread, without the lock, once it leads `expert` and before it lingers
    // (only when max_wait > 0).
    std::function<void(int expert)> before_linger;
  };
  // Call before any Compute.
  void TEST_SetHooks(TestHooks hooks) { hooks_ = std::move(hooks); }
  // Blocks until at least `calls` calls wait in `expert`'s queue, not yet taken into a batch.
  void TEST_AwaitQueued(int expert, int calls) const;
  // Blocks until at least `callers` callers wait for an FFN slot (concurrent_ffn).
  void TEST_AwaitSlotWaiters(int callers) const;

 private:
  // One Compute call. Its inputs are read-only; `done` and `status` are written under mu_ by
  // whichever leader ran it, and read by its caller under mu_.
  struct Call {
    ConstMatrixView tokens;
    absl::Span<const int32_t> rows;
    MatrixView y;
    const CallLimits* limits;
    absl::Time queued_at;
    bool taken = false;  // in a leader's batch: its buffers are in use until done
    bool done = false;
    absl::Status status;
  };
  struct Queue {
    std::deque<Call*> pending;
    bool busy = false;  // a leader owns this expert
  };

  // Batching on, `call` queued at `expert`: leads batches of the expert until one of them, or
  // another leader's, has computed the call (or ended it); returns its status. `slots`: the FFN
  // slots (units of 1/kernel_threads) an FFN call this thread leads takes.
  absl::Status RunQueued(int expert, Call& call, int slots);
  // Takes a queued `call` back without computing it (waiting for it if a leader has it).
  void Withdraw(int expert, Call& call) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Batching off: computes `call` alone, within the FFN slot limit.
  absl::Status ComputeAlone(int expert, Call& call, int slots);
  // Every group on its own kernel thread (options_.across_threads), or false having run none.
  bool ComputeAcrossThreads(absl::Span<const Group> groups, std::vector<Call>& calls,
                            absl::Status& status);
  // Waits until `call` is done (false) or nobody leads `expert` (true: the caller now does).
  // At the call's deadline, ends it (taking it out of the queue) and returns false.
  bool AwaitLead(int expert, Call& call) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // As leader: lingers (max_wait) unless the queue is full, takes an FFN slot and the next batch.
  // Empty (no slot taken) when `call`'s deadline passed while waiting for the slot; the call is
  // then ended and out of the queue.
  std::vector<Call*> LingerAndTakeBatch(int expert, Call& call, int slots)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes the next batch, ending (not computing) the calls nobody wants any more.
  std::vector<Call*> TakeBatch(Queue& queue) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends a waiting call without computing it: out of `queue`, done with `status`.
  void Drop(Queue& queue, Call& call, absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Observes the queue wait of a call that ends without being computed (the overload tail).
  void WaitEnded(const Call& call) const;
  // Gathers the batch's rows once into the compute layout, runs one FFN call, scatters y back.
  absl::Status RunBatch(int expert, const std::vector<Call*>& batch) const;
  // Releases the slot, hands `status` to every call of the batch and counts it.
  void FinishBatch(const std::vector<Call*>& batch, const absl::Status& status, int slots)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // False when `deadline` passes first (no slot taken).
  bool AcquireSlot(absl::Time deadline, int slots) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SlotTimeout(const Call& call) const;
  int64_t PendingTokens(const Queue& queue) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ComputeFn compute_;
  const int64_t row_stride_;
  const BatchingOptions options_;
  TestHooks hooks_;  // set before any Compute, read-only after
  mutable absl::Mutex mu_;
  std::map<int, Queue> queues_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;       // FFN slots taken (kernel_threads per FFN call)
  int slot_waiters_ ABSL_GUARDED_BY(mu_) = 0;  // callers waiting in AcquireSlot
  BatchingStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moe

#endif  // MOE_EXPERT_SERVICE_EXPERT_BATCHER_H_
