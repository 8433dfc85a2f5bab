#include "common/kernels/thread_pool.h"

#include <pthread.h>

#include <algorithm>
#include <utility>

#include "common/kernels/cpu_affinity.h"

namespace moe {
namespace {

constexpr int kMaxPhases = 4;
// Pauses between two yields (or two looks at the clock) while spinning.
constexpr int kSpinsPerYield = 64;

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Spins politely: yields every few rounds so an oversubscribed machine can run whoever we wait
// for.
inline void Backoff(int& spins) {
  if (++spins % kSpinsPerYield == 0) {
    std::this_thread::yield();
  } else {
    CpuRelax();
  }
}

}  // namespace

struct KernelThreadPool::Job {
  explicit Job(absl::Span<const Phase> p) : phases(p) {}
  absl::Span<const Phase> phases;
  std::atomic<int64_t> next[kMaxPhases] = {};  // first unit not yet claimed
  std::atomic<int64_t> done[kMaxPhases] = {};  // units finished
};

KernelThreadPool::KernelThreadPool(int threads, std::chrono::microseconds helper_poll,
                                   std::vector<int> cpus)
    : helper_poll_(helper_poll), cpus_(std::move(cpus)) {
  for (int i = 1; i < threads; ++i) {
    const int cpu = i < static_cast<int>(cpus_.size()) ? cpus_[i] : -1;  // -1: not pinned
    helpers_.emplace_back([this, cpu] { HelperLoop(cpu); });
    pthread_setname_np(helpers_.back().native_handle(), kHelperThreadName);  // named on return
  }
}

KernelThreadPool::~KernelThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : helpers_) t.join();
}

void KernelThreadPool::Work(Job& job, int threads) {
  for (size_t p = 0; p < job.phases.size(); ++p) {
    if (p > 0) {
      int spins = 0;
      while (job.done[p - 1].load(std::memory_order_acquire) < job.phases[p - 1].units) {
        Backoff(spins);
      }
    }
    const Phase& phase = job.phases[p];
    while (true) {
      int64_t begin = job.next[p].load(std::memory_order_relaxed);
      int64_t size = 0;
      do {
        if (begin >= phase.units) break;
        size = std::min(phase.units - begin,
                        std::max(phase.min_chunk, (phase.units - begin) / (2 * threads)));
      } while (!job.next[p].compare_exchange_weak(begin, begin + size, std::memory_order_relaxed));
      if (begin >= phase.units) break;
      phase.run(begin, begin + size);
      job.done[p].fetch_add(size, std::memory_order_acq_rel);
    }
  }
}

void KernelThreadPool::Run(absl::Span<const Phase> phases) {
  if (TryRun(phases)) return;
  // No helpers, or they serve someone else: do it all here, in one piece.
  for (const Phase& phase : phases) {
    if (phase.units > 0) phase.run(0, phase.units);
  }
}

bool KernelThreadPool::TryRun(absl::Span<const Phase> phases) {
  if (helpers_.empty() || phases.size() > kMaxPhases ||
      busy_.exchange(true, std::memory_order_acquire)) {
    return false;
  }
  Job job(phases);
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &job;
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  Work(job, threads());
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = nullptr;  // no helper joins from here on
  }
  // Helpers still inside finish their last chunk within microseconds: poll for them as a helper
  // polls for work, and sleep only if one is late (descheduled).
  const auto until = std::chrono::steady_clock::now() + helper_poll_;
  for (int spins = 0; active_.load(std::memory_order_acquire) != 0;) {
    Backoff(spins);
    if (spins % kSpinsPerYield == 0 && std::chrono::steady_clock::now() >= until) {
      std::unique_lock<std::mutex> lock(mu_);
      idle_.wait(lock, [this] { return active_.load(std::memory_order_acquire) == 0; });
    }
  }
  busy_.store(false, std::memory_order_release);
  return true;
}

void KernelThreadPool::PollForJob(uint64_t seen) const {
  const auto until = std::chrono::steady_clock::now() + helper_poll_;
  for (int spins = 0; generation_.load(std::memory_order_acquire) == seen;) {
    Backoff(spins);
    if (spins % kSpinsPerYield == 0 && std::chrono::steady_clock::now() >= until) return;
  }
}

void KernelThreadPool::HelperLoop(int cpu) {
  if (cpu >= 0) PinCallingThread(cpu);
  uint64_t seen = 0;
  while (true) {
    PollForJob(seen);  // then take the job under the lock, or sleep there until one comes
    Job* job = nullptr;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [this, seen] {
        return stop_ || generation_.load(std::memory_order_relaxed) != seen;
      });
      if (stop_) return;
      seen = generation_.load(std::memory_order_relaxed);
      if (job_ == nullptr) continue;  // woke after that job was finished
      job = job_;
      active_.fetch_add(1, std::memory_order_relaxed);
    }
    Work(*job, threads());
    if (active_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mu_);  // the caller may be between its check and its wait
      idle_.notify_all();
    }
  }
}

}  // namespace moe
