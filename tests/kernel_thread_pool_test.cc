// KernelThreadPool: every task runs once, phases are ordered, concurrent callers neither block
// each other nor lose work, an idle helper polls for a bounded time, then sleeps, and pinned
// helpers run only on their CPUs while the caller stays free.
#include <sched.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/kernels/cpu_affinity.h"
#include "common/kernels/thread_pool.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

class KernelThreadPoolTest : public ::testing::TestWithParam<int> {};

TEST_P(KernelThreadPoolTest, RunsEveryUnitOfEveryPhaseExactlyOnce) {
  KernelThreadPool pool(GetParam());
  EXPECT_EQ(pool.threads(), std::max(1, GetParam()));
  for (int round = 0; round < 20; ++round) {
    std::vector<std::atomic<int>> first(37), second(5);
    auto count_first = [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) first[i].fetch_add(1);
    };
    auto count_second = [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) second[i].fetch_add(1);
    };
    const KernelThreadPool::Phase phases[] = {
        {37, 1, count_first}, {0, 1, count_first}, {5, 2, count_second}};
    pool.Run(phases);
    for (auto& c : first) ASSERT_EQ(c.load(), 1);
    for (auto& c : second) ASSERT_EQ(c.load(), 1);
  }
}

TEST_P(KernelThreadPoolTest, LaterPhasesSeeAllWritesOfEarlierOnes) {
  KernelThreadPool pool(GetParam());
  constexpr int kTasks = 64;
  for (int round = 0; round < 20; ++round) {
    std::vector<int> produced(kTasks, 0);  // plain ints: the phase barrier must order them
    std::vector<long> consumed(kTasks, 0);
    auto produce = [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) produced[i] = static_cast<int>(i) + round;
    };
    auto consume = [&](int64_t begin, int64_t end) {
      long sum = 0;
      for (int v : produced) sum += v;
      for (int64_t i = begin; i < end; ++i) consumed[i] = sum;
    };
    const KernelThreadPool::Phase phases[] = {{kTasks, 1, produce}, {kTasks, 3, consume}};
    pool.Run(phases);
    const long want = kTasks * (kTasks - 1) / 2 + long{kTasks} * round;
    for (long v : consumed) ASSERT_EQ(v, want);
  }
}

TEST_P(KernelThreadPoolTest, ConcurrentCallersAllFinishWithTheirOwnWork) {
  KernelThreadPool pool(GetParam());
  constexpr int kCallers = 8, kRounds = 25, kTasks = 16;
  std::vector<std::thread> callers;
  std::vector<long> totals(kCallers, 0);
  for (int c = 0; c < kCallers; ++c) {
    callers.emplace_back([&, c] {
      for (int round = 0; round < kRounds; ++round) {
        std::vector<int> out(kTasks, 0);
        auto work = [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) out[i] = c * 1000 + static_cast<int>(i);
        };
        const KernelThreadPool::Phase phases[] = {{kTasks, 1, work}};
        pool.Run(phases);
        for (int v : out) totals[c] += v;
      }
    });
  }
  for (std::thread& t : callers) t.join();
  for (int c = 0; c < kCallers; ++c) {
    EXPECT_EQ(totals[c], long{kRounds} * (kTasks * c * 1000 + kTasks * (kTasks - 1) / 2));
  }
}

TEST(KernelThreadPoolTryRunTest, RunsOnTheHelpersOrRunsNothing) {
  KernelThreadPool alone(1);  // no helpers
  std::atomic<int> ran{0};    // the caller and the helper both count
  auto count = [&](int64_t begin, int64_t end) { ran += static_cast<int>(end - begin); };
  const KernelThreadPool::Phase counted[] = {{4, 1, count}};
  EXPECT_FALSE(alone.TryRun(counted));
  EXPECT_EQ(ran.load(), 0);

  KernelThreadPool pool(2);
  // A job whose every unit waits until both threads are inside it: it only ends because the
  // helper took a unit beside the caller.
  std::atomic<int> inside{0};
  auto meet = [&](int64_t, int64_t) {
    inside.fetch_add(1);
    while (inside.load() < 2) std::this_thread::yield();
  };
  const KernelThreadPool::Phase met[] = {{2, 1, meet}};
  ASSERT_TRUE(pool.TryRun(met));
  EXPECT_EQ(inside.load(), 2);
  // While such a job holds the helpers, TryRun (here from inside it) runs nothing.
  inside = 0;
  std::atomic<bool> refused{false};
  auto try_meanwhile = [&](int64_t, int64_t) {
    if (inside.fetch_add(1) == 0) refused = !pool.TryRun(counted) && ran.load() == 0;
    while (inside.load() < 2) std::this_thread::yield();
  };
  const KernelThreadPool::Phase probe[] = {{2, 1, try_meanwhile}};
  ASSERT_TRUE(pool.TryRun(probe));
  EXPECT_TRUE(refused.load());
  ASSERT_TRUE(pool.TryRun(counted));
  EXPECT_EQ(ran.load(), 4);
}

TEST(KernelThreadPoolPinTest, PinnedHelpersRunOnTheirCpusAndTheCallerStaysFree) {
  const std::vector<int> allowed = AllowedCpus();
  if (allowed.size() < 2) GTEST_SKIP() << "needs two CPUs this process may use";
  // Helper 1 on the last allowed CPU, helper 2 on the first: not simply in order.
  const std::vector<int> cpus = {allowed[0], allowed.back(), allowed[0]};
  KernelThreadPool pool(3, KernelThreadPool::kDefaultHelperPoll, cpus);
  EXPECT_EQ(pool.cpus(), cpus);
  // Every unit waits until all three threads are inside the job, so each thread runs one.
  std::atomic<int> inside{0};
  std::vector<std::vector<int>> helper_masks;
  std::vector<int> helper_cpus_now;
  std::vector<int> caller_mask;
  std::mutex mu;
  const std::thread::id caller = std::this_thread::get_id();
  auto meet = [&](int64_t, int64_t) {
    inside.fetch_add(1);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (inside.load() < 3 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
    std::lock_guard<std::mutex> lock(mu);
    if (std::this_thread::get_id() == caller) {
      caller_mask = AllowedCpus();
    } else {
      helper_masks.push_back(AllowedCpus());
      helper_cpus_now.push_back(sched_getcpu());
    }
  };
  const KernelThreadPool::Phase met[] = {{3, 1, meet}};
  pool.Run(met);
  ASSERT_EQ(inside.load(), 3);
  ASSERT_EQ(helper_masks.size(), 2u);
  std::sort(helper_masks.begin(), helper_masks.end());
  EXPECT_EQ(helper_masks[0], std::vector<int>{allowed[0]});
  EXPECT_EQ(helper_masks[1], std::vector<int>{allowed.back()});
  for (int cpu : helper_cpus_now) {
    EXPECT_TRUE(cpu == allowed[0] || cpu == allowed.back()) << "a helper ran on CPU " << cpu;
  }
  EXPECT_EQ(caller_mask, allowed) << "the caller was pinned";
  EXPECT_EQ(AllowedCpus(), allowed);
}

TEST(KernelThreadPoolPinTest, UnpinnedHelpersKeepEveryCpu) {
  const std::vector<int> allowed = AllowedCpus();
  KernelThreadPool pool(2);
  EXPECT_TRUE(pool.cpus().empty());
  std::vector<int> helper_mask;
  const std::thread::id caller = std::this_thread::get_id();
  std::atomic<int> inside{0};
  auto meet = [&](int64_t, int64_t) {
    inside.fetch_add(1);
    while (inside.load() < 2) std::this_thread::yield();
    if (std::this_thread::get_id() != caller) helper_mask = AllowedCpus();
  };
  const KernelThreadPool::Phase met[] = {{2, 1, meet}};
  ASSERT_TRUE(pool.TryRun(met));
  EXPECT_EQ(helper_mask, allowed);
}

TEST(ResolveKernelCpusTest, PinsOnlyAPoolOfOneThreadPerAllowedCpu) {
  const std::vector<int> allowed = AllowedCpus();
  const int n = static_cast<int>(allowed.size());
  const KernelCpus every = ResolveKernelCpus(/*pin=*/true, 0);
  EXPECT_EQ(every.threads, n);
  EXPECT_EQ(every.cpus, n >= 2 ? allowed : std::vector<int>{});
  EXPECT_EQ(ResolveKernelCpus(/*pin=*/true, n).cpus, every.cpus);
  // More or fewer threads than CPUs: the scheduler places them.
  for (int threads : {1, n + 1}) {
    const KernelCpus other = ResolveKernelCpus(/*pin=*/true, threads);
    EXPECT_EQ(other.threads, threads);
    EXPECT_TRUE(other.cpus.empty()) << threads << " threads";
  }
  const KernelCpus unpinned = ResolveKernelCpus(/*pin=*/false, 0);
  EXPECT_EQ(unpinned.threads, n);
  EXPECT_TRUE(unpinned.cpus.empty());
}

// This process's kernel pool helpers: its threads named kHelperThreadName, as /proc/self/task/TID.
std::vector<std::filesystem::path> HelperTasks() {
  std::vector<std::filesystem::path> tasks;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    if (std::getline(comm, name) && name == KernelThreadPool::kHelperThreadName) {
      tasks.push_back(task.path());
    }
  }
  return tasks;
}

// CPU time of this process's kernel pool helpers, in milliseconds, and how many there are. Only
// theirs: OpenBLAS's own threads spin for ~0.1 s after the library loads (measured ~80 ms under
// ASan), which the process's CPU time would count.
struct HelperCpu {
  int threads = 0;
  double ms = 0;
};
HelperCpu HelperCpuNow() {
  HelperCpu cpu;
  for (const std::filesystem::path& task : HelperTasks()) {
    // The thread's CPU clock as glibc's pthread_getcpuclockid builds it from a thread id:
    // (~tid << 3) | CPUCLOCK_PERTHREAD_MASK (4) | CPUCLOCK_SCHED (2).
    const auto tid = static_cast<uint32_t>(std::stoul(task.filename().string()));
    timespec ts;
    if (clock_gettime(static_cast<clockid_t>((~tid << 3) | 6), &ts) != 0) continue;
    ++cpu.threads;
    cpu.ms += ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
  }
  return cpu;
}

// The scheduler state of the pool's one helper (/proc's stat field 3): 'R' running or waiting for
// a core, which a polling helper is throughout since it only pauses and yields, however loaded the
// machine; 'S' asleep on its condition variable. '?' when there is not exactly one helper.
char HelperState() {
  const std::vector<std::filesystem::path> tasks = HelperTasks();
  if (tasks.size() != 1) return '?';
  std::ifstream stat(tasks[0] / "stat");
  std::string line;
  std::getline(stat, line);
  const size_t name_end = line.rfind(") ");
  return name_end == std::string::npos ? '?' : line[name_end + 2];
}

// CPU time the pool's one helper uses in the `window` after a job: its polling (the main thread
// only sleeps). The waits are the idleness under test, not synchronisation.
double HelperCpuMsWhileIdle(std::chrono::milliseconds window) {
  const HelperCpu before = HelperCpuNow();
  std::this_thread::sleep_for(window);
  const HelperCpu after = HelperCpuNow();
  EXPECT_EQ(before.threads, 1) << "threads named " << KernelThreadPool::kHelperThreadName;
  EXPECT_EQ(after.threads, 1);
  return after.ms - before.ms;
}

void RunOneJob(KernelThreadPool& pool) {
  std::vector<std::atomic<int>> done(64);
  auto work = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) done[i].fetch_add(1);
  };
  const KernelThreadPool::Phase phases[] = {{64, 1, work}};
  pool.Run(phases);
  for (auto& d : done) ASSERT_EQ(d.load(), 1);
}

// Judged by the helper's scheduler state, not its CPU time: on a loaded machine a polling helper
// that yields gets little CPU (under 20 ms of a 100 ms poll beside six busy processes on two
// cores), but it stays runnable until its poll ends, and then sleeps.
TEST(KernelThreadPoolPollTest, AnIdleHelperPollsForTheNextJobThenSleeps) {
  using Clock = std::chrono::steady_clock;
  constexpr auto kPoll = std::chrono::milliseconds(500);
  KernelThreadPool pool(2, kPoll);
  RunOneJob(pool);
  const Clock::time_point job_done = Clock::now();
  // Looks 1 ms apart over the poll's first fifth: each finds the helper polling, not asleep.
  for (int look = 0; Clock::now() < job_done + kPoll / 5; ++look) {
    ASSERT_EQ(HelperState(), 'R') << "look " << look << ": the helper did not poll for a job";
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // Then it falls asleep once its poll ends.
  while (HelperState() != 'S') {
    ASSERT_LT(Clock::now(), job_done + 10 * kPoll) << "the helper polled past its 500 ms";
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_LE(HelperCpuMsWhileIdle(std::chrono::milliseconds(400)), 10)
      << "the helper used CPU while asleep";
}

TEST(KernelThreadPoolPollTest, WithoutPollingAnIdleHelperSleepsAtOnce) {
  KernelThreadPool pool(2, std::chrono::microseconds(0));
  for (int round = 0; round < 20; ++round) RunOneJob(pool);  // each wakes the sleeping helper
  EXPECT_LE(HelperCpuMsWhileIdle(std::chrono::milliseconds(400)), 10);
}

INSTANTIATE_TEST_SUITE_P(Threads, KernelThreadPoolTest, ::testing::Values(0, 1, 2, 4),
                         [](const auto& info) { return "Threads" + std::to_string(info.param); });

}  // namespace
}  // namespace moe
