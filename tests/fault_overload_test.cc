// Overload and shutdown of the real binaries under load: 256 concurrent calls with 200 ms
// deadlines keep every process's threads bounded, fail only with RESOURCE_EXHAUSTED (saying
// "overloaded") or DEADLINE_EXCEEDED, and leave the cluster serving at once; SIGTERM under
// load exits within --drain_s + 1 s and every call in flight ends with a clear status. After
// large calls, the router still serves a small call whose deadline a large call would miss (its
// admission judges each call by what calls of its size take), and after calls that hung on a
// stopped shard until their deadline, a call with a shorter one (an idle router runs every call
// that can start).
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <iostream>
#include <map>
#include <string>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/cluster.h"
#include "testing/load_loop.h"
#include "testing/subprocess.h"
#include "tests/fault_common.h"

namespace moe {
namespace {

using fault::PollUntil;

// Keeps `concurrency` async Forward calls in flight (each with `deadline`) until `duration`
// has passed; returns how many calls ended with each code and the first message of each.
// Samples `sample` every 50 ms.
std::map<grpc::StatusCode, std::pair<int64_t, std::string>> Flood(
    v1::Router::Stub& stub, const v1::ForwardRequest& request, int concurrency,
    absl::Duration deadline, absl::Duration duration, const std::function<void()>& sample) {
  struct Slot {
    grpc::ClientContext context;
    v1::ForwardResponse response;
  };
  absl::Mutex mu;
  std::map<grpc::StatusCode, std::pair<int64_t, std::string>> codes;
  const absl::Time end = absl::Now() + duration;
  absl::BlockingCounter done(concurrency);
  std::function<void(int)> issue;
  std::vector<std::unique_ptr<Slot>> slots(concurrency);
  issue = [&](int i) {
    slots[i] = std::make_unique<Slot>();
    slots[i]->context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
    stub.async()->Forward(&slots[i]->context, &request, &slots[i]->response,
                          [&, i](grpc::Status status) {
                            {
                              absl::MutexLock lock(&mu);
                              auto& [count, message] = codes[status.error_code()];
                              if (count++ == 0) message = status.error_message();
                            }
                            if (absl::Now() < end) {
                              issue(i);  // the next call of this slot
                            } else {
                              done.DecrementCount();
                            }
                          });
  };
  for (int i = 0; i < concurrency; ++i) issue(i);
  while (absl::Now() < end) {
    sample();
    absl::SleepFor(absl::Milliseconds(50));  // the sampling period, not a synchronisation
  }
  done.Wait();  // every slot's last call has ended (each within `deadline`)
  return codes;
}

TEST(FaultOverloadTest, FloodKeepsThreadsBoundedFailsOnlyWithOverloadCodesAndRecoversAtOnce) {
  testing::Cluster cluster(fault::TinyModel(), 0, {"0-3", "4-7"});
  ASSERT_GT(cluster.router_server().port, 0);
  const v1::ForwardRequest request =
      testing::MakeRequest(testing::RandomTokens(64, fault::kTinyD, 3), 64, fault::kTinyD);
  v1::ForwardResponse response;
  ASSERT_TRUE(cluster.Forward(request, &response).ok());
  std::vector<int> pids = {cluster.router_server().process->pid(), cluster.expert(0).process->pid(),
                           cluster.expert(1).process->pid()};
  std::vector<int> max_threads(pids.size(), 0);
  const auto codes =
      Flood(cluster.router(), request, 256, absl::Milliseconds(200), absl::Seconds(4), [&] {
        for (size_t i = 0; i < pids.size(); ++i) {
          max_threads[i] = std::max(max_threads[i], testing::ThreadCount(pids[i]));
        }
      });
  // The first request after the flood, with a 1 s deadline (scaled under ASan).
  const absl::Duration recovery = absl::Seconds(1) * testing::kSanitizerSlowdown;
  const absl::Time first = absl::Now();
  const grpc::Status after = cluster.Forward(request, &response, recovery);
  const absl::Duration latency = absl::Now() - first;

  std::cout << "c=256, 200 ms deadlines, 4 s:";
  for (const auto& [code, entry] : codes) {
    std::cout << " code " << code << ": " << entry.first << " (\"" << entry.second << "\")";
  }
  std::cout << "; peak threads router " << max_threads[0] << ", shards " << max_threads[1] << " / "
            << max_threads[2] << "; peak RSS KiB router " << testing::PeakRssKib(pids[0])
            << ", shard " << testing::PeakRssKib(pids[1])
            << "; first call after: " << after.error_code() << " in " << latency << std::endl;
  for (const auto& [code, entry] : codes) {
    const int64_t count = entry.first;
    EXPECT_TRUE(code == grpc::OK || code == grpc::RESOURCE_EXHAUSTED ||
                code == grpc::DEADLINE_EXCEEDED)
        << count << " calls ended with code " << code;
    if (code == grpc::RESOURCE_EXHAUSTED) {
      EXPECT_THAT(entry.second, ::testing::HasSubstr("overloaded: ")) << "the first refusal";
    }
  }
  // --max_threads (default: 512 for the router, whose queued calls each hold a thread; 64 for a
  // shard) caps gRPC's handler threads; gRPC, BLAS and the directory add a fixed few dozen.
  for (size_t i = 0; i < pids.size(); ++i) {
    EXPECT_GT(max_threads[i], 0);
    EXPECT_LE(max_threads[i], i == 0 ? 512 + 64 : 128) << "process " << i << " (0 = router)";
  }
  EXPECT_TRUE(after.ok()) << after.error_code() << ": " << after.error_message();
  EXPECT_LT(latency, recovery);
}

TEST(FaultOverloadTest, AfterLargeCallsASmallCallIsJudgedByWhatSmallCallsTake) {
  testing::Cluster cluster(fault::TinyModel(), 0, {"0-3", "4-7"});
  ASSERT_GT(cluster.router_server().port, 0);
  constexpr int kLarge = 3000;  // its answer within the client's 4 MB message limit
  const v1::ForwardRequest large =
      testing::MakeRequest(testing::RandomTokens(kLarge, fault::kTinyD, 5), kLarge, fault::kTinyD);
  v1::ForwardResponse response;
  absl::Duration took = absl::ZeroDuration();
  constexpr int kLargeCalls = 8;
  for (int i = 0; i < kLargeCalls; ++i) {
    const absl::Time start = absl::Now();
    const grpc::Status status = cluster.Forward(large, &response, absl::Seconds(30));
    ASSERT_TRUE(status.ok()) << status.error_message();
    took += absl::Now() - start;
  }
  // The router's estimate for large calls rose to about two thirds of their run time over 8 calls
  // (measured here: 40 ms of the 96 ms these calls took with the client's encoding); a fifth of
  // their time is less than that, and far more than a one-token call takes.
  const absl::Duration deadline = took / kLargeCalls / 5;
  std::cout << "calls of " << kLarge << " tokens took " << took / kLargeCalls
            << " on average; deadline of the small calls " << deadline << std::endl;
  const v1::ForwardRequest small =
      testing::MakeRequest(testing::RandomTokens(1, fault::kTinyD, 6), 1, fault::kTinyD);
  int served = 0;
  for (int i = 0; i < 5; ++i) {
    const grpc::Status status = cluster.Forward(small, &response, deadline);
    // Before, every one was refused at once: "the deadline leaves …, less than what a call takes
    // (the mean of the large calls)". A call the loaded machine runs past its deadline is not the
    // router's refusal.
    EXPECT_THAT(status.error_message(), ::testing::Not(::testing::HasSubstr("less than what")));
    served += status.ok();
  }
  EXPECT_GT(served, 0);
  // A large call with the same deadline runs too, the router being idle (an estimate is never a
  // reason to refuse a call that can start), and ends at its deadline.
  const grpc::Status late = cluster.Forward(large, &response, deadline);
  EXPECT_EQ(late.error_code(), grpc::DEADLINE_EXCEEDED);
  EXPECT_THAT(late.error_message(), ::testing::Not(::testing::HasSubstr("less than what")));
}

TEST(FaultOverloadTest, CallsThatHungOnAStoppedShardDoNotGetLaterCallsRefused) {
  testing::Cluster cluster(fault::TinyModel(), 0, {"0-3", "4-7"});
  ASSERT_GT(cluster.router_server().port, 0);
  const v1::ForwardRequest request =
      testing::MakeRequest(testing::RandomTokens(8, fault::kTinyD, 7), 8, fault::kTinyD);
  v1::ForwardResponse response;
  ASSERT_TRUE(cluster.Forward(request, &response, absl::Seconds(5)).ok());
  // Its only shard for experts 4-7 stopped, a call runs until its deadline or until keepalive
  // gives the shard up (~1.5 s)...
  const pid_t stopped = cluster.expert(1).process->pid();
  ASSERT_TRUE(testing::StopAndAwaitStopped(stopped));
  const absl::Time start = absl::Now();
  const grpc::Status hung = cluster.Forward(request, &response, absl::Seconds(4));
  const absl::Duration took = absl::Now() - start;
  kill(stopped, SIGCONT);
  EXPECT_FALSE(hung.ok());
  ASSERT_GT(took, absl::Seconds(1)) << hung.error_message();
  // ...which leaves the router's estimate for such calls above 1/8 of that, over 100 ms. The
  // shard is back; a call with a 100 ms deadline on the idle router runs, and is served once
  // the router has reconnected (before, each was refused at once: "less than what a call of 8
  // tokens takes").
  const bool served = PollUntil(
      [&] {
        const grpc::Status status = cluster.Forward(request, &response, absl::Milliseconds(100));
        EXPECT_THAT(status.error_message(), ::testing::Not(::testing::HasSubstr("less than what")));
        return status.ok();
      },
      absl::Seconds(10));
  EXPECT_TRUE(served);
}

TEST(FaultOverloadTest, SigtermUnderLoadExitsWithinDrainPlusOneSecondAndEveryCallEndsClearly) {
  testing::Cluster cluster(fault::TinyModel(), 0, {"0-3", "4-7"}, {"--drain_s=2"});
  ASSERT_GT(cluster.router_server().port, 0);
  const v1::ForwardRequest request =
      testing::MakeRequest(testing::RandomTokens(16, fault::kTinyD, 5), 16, fault::kTinyD);
  testing::LoadLoop load(cluster.router_server().target(), request, 8, absl::Seconds(5));
  ASSERT_TRUE(PollUntil([&] { return load.Calls() >= 20; }, absl::Seconds(10)));
  testing::Subprocess& router = *cluster.router_server().process;
  const absl::Time signalled = absl::Now();
  kill(router.pid(), SIGTERM);
  const bool exited = PollUntil([&] { return !router.Running(); }, absl::Seconds(10));
  const absl::Duration took = absl::Now() - signalled;
  load.Stop();  // each client's last call ends within its 5 s deadline
  std::cout << "SIGTERM under load (8 clients, --drain_s=2): exited " << took
            << " later; calls: " << load.Summary() << std::endl;
  ASSERT_TRUE(exited) << router.Log();
  EXPECT_LT(took, absl::Seconds(3));
  for (const testing::LoadLoop::Call& call : load.Failures()) {
    // Refused while draining, or the connection closed: UNAVAILABLE; never a hang, INTERNAL
    // or UNKNOWN.
    EXPECT_TRUE(call.code == grpc::UNAVAILABLE || call.code == grpc::CANCELLED)
        << "code " << call.code << ": " << call.message;
    EXPECT_FALSE(call.message.empty()) << "code " << call.code;
  }
}

}  // namespace
}  // namespace moe
