// A tiny intra-op pool for the FFN kernels: one call's work runs on the calling thread plus the
// pool's helper threads. Work is a range of units claimed in "guided" chunks (big first, then
// smaller: remaining / (2 × threads), at least min_chunk), so each thread streams long contiguous
// runs of weights (measured: 128 KB tasks cost ~20% of DRAM bandwidth against 4 MB ones) while a
// helper that wakes late, or is descheduled by another process, only means the others take more.
//
// Policy for concurrent callers (several gRPC threads calling SwigluForward at once): the pool
// serves one Run at a time. A Run that finds the helpers taken by another caller does not queue or
// block: it runs all its work on its own thread. So N concurrent callers use at most
// N + (threads − 1) runnable threads and never deadlock (a caller only ever waits for chunks that
// are already running on another thread); on a loaded machine the helpers go to whoever came first.
//
// Between jobs a helper polls for the next one for `helper_poll` (default kDefaultHelperPoll),
// yielding its core every few pauses, then sleeps on a condition variable. Polling lets the next
// FFN call (the next expert of a request, or the next one-token request) start on every thread at
// once; waking a sleeping helper costs a futex wake and, in a VM, often the wake-up of a halted
// vCPU, during which the caller streams alone. Yielding lets another process's threads (a second
// shard on the same cores) run meanwhile. Likewise a caller whose share is done polls for the
// helpers still finishing their last chunk (up to `helper_poll`) rather than sleeping on a
// condition variable at once, and a helper leaves a job without the mutex. README "Kernel threads
// between calls" has the measurements.
//
// Pinned (`cpus` given, common/kernels/cpu_affinity.h): helper i runs on cpus[i] for good. The
// caller is left where the OS puts it: moving it to cpus[0] for each Run measured slower than
// leaving it (two shards on two cores, one token: 173 against 189 tokens/s, 6 alternating rounds).
//
// Helpers are named kHelperThreadName, so that `top -H`, `perf` and tests tell them from gRPC's
// and OpenBLAS's threads.
//
// Owned by whoever computes (an ExpertShard owns one, sized by its options) and passed to
// SwigluForward through SwigluOptions; there is no process-wide pool.
//
// Thread-safe. Units of one phase must be independent; phase p + 1 starts only after every unit of
// phase p finished, and sees all memory written by phase p.
#ifndef MOE_COMMON_KERNELS_THREAD_POOL_H_
#define MOE_COMMON_KERNELS_THREAD_POOL_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/types/span.h"

namespace moe {

class KernelThreadPool {
 public:
  struct Phase {
    int64_t units;
    int64_t min_chunk;                                        // ≥ 1
    absl::FunctionRef<void(int64_t begin, int64_t end)> run;  // units [begin, end)
  };

  // How long an idle helper polls for the next job before it sleeps.
  static constexpr std::chrono::microseconds kDefaultHelperPoll{1000};
  // The helpers' thread name (Linux's comm: at most 15 characters).
  static constexpr char kHelperThreadName[] = "moe-kernel";

  // `threads` counts the caller: threads − 1 helpers are started (none for threads ≤ 1).
  // `cpus`: empty (not pinned) or one CPU per thread; cpus[0] is the caller's (not enforced).
  explicit KernelThreadPool(int threads, std::chrono::microseconds helper_poll = kDefaultHelperPoll,
                            std::vector<int> cpus = {});
  // Joins the helpers. No Run may be in progress.
  ~KernelThreadPool();
  KernelThreadPool(const KernelThreadPool&) = delete;
  KernelThreadPool& operator=(const KernelThreadPool&) = delete;

  int threads() const { return static_cast<int>(helpers_.size()) + 1; }
  const std::vector<int>& cpus() const { return cpus_; }

  // Runs the phases in order and returns when every unit has run. At most 4 phases.
  void Run(absl::Span<const Phase> phases);
  // Run on the helpers too, or false (nothing run) when there are none or another caller has
  // them.
  bool TryRun(absl::Span<const Phase> phases);

 private:
  struct Job;
  static void Work(Job& job, int threads);
  void HelperLoop(int cpu);
  // Returns once a job newer than `seen` is posted, or after helper_poll_.
  void PollForJob(uint64_t seen) const;

  const std::chrono::microseconds helper_poll_;
  const std::vector<int> cpus_;

  std::vector<std::thread> helpers_;
  std::atomic<bool> busy_{false};        // a Run owns the helpers
  std::atomic<uint64_t> generation_{0};  // bumped when a job is posted; lets helpers spin
  // std::mutex rather than absl::Mutex (CONVENTIONS.md 7) on purpose: Debian's Abseil is built
  // without ThreadSanitizer annotations, so TSAN cannot see absl::Mutex's ordering and would flag
  // every job hand-off; with pthread-based locks the pool is checked under -fsanitize=thread.
  std::mutex mu_;
  std::condition_variable wake_;  // a job was posted, or stop_
  std::condition_variable idle_;  // active_ dropped to 0
  Job* job_ = nullptr;            // guarded by mu_: the posted job, until its caller finished it
  // Helpers inside job_: raised under mu_ as one takes job_, lowered without it once done (the
  // caller polls it; the last helper out notifies idle_ under mu_).
  std::atomic<int> active_{0};
  bool stop_ = false;  // guarded by mu_
};

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_THREAD_POOL_H_
