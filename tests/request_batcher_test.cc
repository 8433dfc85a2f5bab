// The router's cross-request batching with a run function the test controls. Every "the other
// thread got there" is awaited through the batcher's TEST_ seams or a Notification, never a sleep.
#include "router_service/request_batcher.h"

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A request that says which caller it is.
struct Tagged : RequestBatcher::Request {
  std::string name;
};

// Records every batch as the names of its requests; holds a batch that holds `hold` until the
// test releases it, and makes one that holds `slow` take that long (the work of a long batch).
class Recorder {
 public:
  RequestBatcher::RunFn Fn() {
    return [this](absl::Span<RequestBatcher::Request* const> batch) {
      std::vector<std::string> names;
      for (RequestBatcher::Request* request : batch) {
        names.push_back(static_cast<Tagged*>(request)->name);
      }
      {
        absl::MutexLock lock(&mu_);
        batches_.push_back(names);
        ++running_;
      }
      for (const std::string& name : names) {
        if (name == hold_) release_.WaitForNotification();
        if (name == slow_) absl::SleepFor(slow_for_);
      }
      for (RequestBatcher::Request* request : batch) request->status = absl::OkStatus();
      absl::MutexLock lock(&mu_);
      --running_;
    };
  }
  void Hold(std::string name) { hold_ = std::move(name); }
  void Slow(std::string name, absl::Duration takes) {
    slow_ = std::move(name);
    slow_for_ = takes;
  }
  void Release() { release_.Notify(); }
  void AwaitRunning(int batches) {
    absl::MutexLock lock(&mu_);
    auto reached = [this, batches]()
                       ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return running_ >= batches; };
    mu_.Await(absl::Condition(&reached));
  }
  std::vector<std::vector<std::string>> batches() {
    absl::MutexLock lock(&mu_);
    return batches_;
  }

 private:
  std::string hold_, slow_;  // set before any batch runs
  absl::Duration slow_for_;
  absl::Notification release_;
  absl::Mutex mu_;
  std::vector<std::vector<std::string>> batches_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;
};

// Runs a request on its own thread; status() joins it.
class Caller {
 public:
  Caller(RequestBatcher& batcher, int key, std::string name, int64_t tokens = 1,
         absl::Time deadline = absl::InfiniteFuture()) {
    request_.name = std::move(name);
    request_.tokens = tokens;
    request_.deadline = deadline;
    request_.cancelled = [this] { return cancelled_.load(); };
    thread_ = std::thread([this, &batcher, key] { status_ = batcher.Run(key, request_); });
  }
  ~Caller() {
    if (thread_.joinable()) thread_.join();
  }
  void Cancel() { cancelled_ = true; }
  absl::Status status() {
    thread_.join();
    return status_;
  }

 private:
  Tagged request_;
  std::atomic<bool> cancelled_{false};
  absl::Status status_;
  std::thread thread_;
};

// Runs "first" (which `recorder` must hold), queues `names` behind it in order, releases it and
// waits until all have been answered: "first" alone, then `names` as one batch.
void AnswerBehindAFirstBatch(RequestBatcher& batcher, Recorder& recorder,
                             const std::vector<std::string>& names) {
  Caller first(batcher, 0, "first");
  recorder.AwaitRunning(1);
  std::vector<std::unique_ptr<Caller>> queued;
  for (const std::string& name : names) {
    queued.push_back(std::make_unique<Caller>(batcher, 0, name));
    batcher.TEST_AwaitQueued(0, static_cast<int>(queued.size()));
  }
  recorder.Release();
  EXPECT_TRUE(first.status().ok());
  for (auto& caller : queued) EXPECT_TRUE(caller->status().ok());
}

// Lingering bounded only by half of the last batch's time. Batches held by a test never stall
// (however long a loaded machine takes to queue the requests behind them).
RequestBatchingOptions LongLinger() {
  RequestBatchingOptions options;
  options.max_wait = absl::Hours(1);
  options.stalled_after = absl::InfiniteDuration();
  return options;
}

RequestBatchingOptions NoLinger() {
  RequestBatchingOptions options = LongLinger();
  options.max_wait = absl::ZeroDuration();
  return options;
}

TEST(RequestBatcherTest, AnIdleLayerRunsARequestAtOnce) {
  Recorder recorder;
  RequestBatcher batcher(recorder.Fn(), {});
  EXPECT_TRUE(Caller(batcher, 0, "a").status().ok());
  EXPECT_TRUE(Caller(batcher, 0, "b").status().ok());
  EXPECT_THAT(recorder.batches(), ElementsAre(ElementsAre("a"), ElementsAre("b")));
}

TEST(RequestBatcherTest, RequestsArrivingWhileABatchRunsGoOutTogetherInOrder) {
  Recorder recorder;
  recorder.Hold("first");
  RequestBatcher batcher(recorder.Fn(), NoLinger());
  AnswerBehindAFirstBatch(batcher, recorder, {"b", "c", "d"});
  EXPECT_THAT(recorder.batches(), ElementsAre(ElementsAre("first"), ElementsAre("b", "c", "d")));
}

TEST(RequestBatcherTest, ABatchStopsBeforeItWouldPassMaxTokens) {
  Recorder recorder;
  recorder.Hold("first");
  RequestBatchingOptions options = NoLinger();
  options.max_tokens = 16;  // requests of 4 tokens and more go out alone
  RequestBatcher batcher(recorder.Fn(), options);
  Caller first(batcher, 0, "first");
  recorder.AwaitRunning(1);
  std::vector<std::unique_ptr<Caller>> rest;
  for (auto [name, tokens] : {std::pair{"three", 3},
                              {"two", 2},
                              {"one", 1},
                              {"other three", 3},
                              {"second three", 3},
                              {"third three", 3},
                              {"fourth three", 3}}) {
    rest.push_back(std::make_unique<Caller>(batcher, 0, name, tokens));
    batcher.TEST_AwaitQueued(0, static_cast<int>(rest.size()));
  }
  recorder.Release();
  for (auto& caller : rest) EXPECT_TRUE(caller->status().ok());
  EXPECT_THAT(recorder.batches(),
              ElementsAre(ElementsAre("first"),
                          ElementsAre("three", "two", "one", "other three", "second three",
                                      "third three"),  // 15 tokens: the next 3 would make 18
                          ElementsAre("fourth three")));
}

TEST(RequestBatcherTest, LayersDoNotWaitForEachOther) {
  Recorder recorder;
  recorder.Hold("layer0");
  RequestBatcher batcher(recorder.Fn(), NoLinger());
  Caller held(batcher, 0, "layer0");
  recorder.AwaitRunning(1);
  EXPECT_TRUE(Caller(batcher, 1, "layer1").status().ok());  // while layer 0's batch is held
  recorder.Release();
  EXPECT_TRUE(held.status().ok());
}

TEST(RequestBatcherTest, InFlightBoundsTheBatchesOfALayerRunningAtOnce) {
  Recorder recorder;
  recorder.Hold("a");
  RequestBatchingOptions options = NoLinger();
  options.in_flight = 2;
  RequestBatcher batcher(recorder.Fn(), options);
  Caller a(batcher, 0, "a");
  recorder.AwaitRunning(1);
  // A second batch starts beside the held one: it needs no release to finish.
  EXPECT_TRUE(Caller(batcher, 0, "b").status().ok());
  recorder.Release();
  EXPECT_TRUE(a.status().ok());
}

TEST(RequestBatcherTest, ARequestThatCannotStartBeforeItsDeadlineIsRefusedAsOverloaded) {
  Recorder recorder;
  recorder.Hold("first");
  RequestBatchingOptions options = NoLinger();
  absl::Mutex mu;
  std::vector<absl::Duration> waits;  // as the router's batch-wait histogram sees them
  options.waited = [&](absl::Duration wait) {
    absl::MutexLock lock(&mu);
    waits.push_back(wait);
  };
  RequestBatcher batcher(recorder.Fn(), options);
  Caller first(batcher, 0, "first");
  recorder.AwaitRunning(1);
  const absl::Status late =
      Caller(batcher, 0, "late", 1, absl::Now() + absl::Milliseconds(50)).status();
  EXPECT_EQ(late.code(), absl::StatusCode::kResourceExhausted) << late;
  EXPECT_THAT(std::string(late.message()), HasSubstr("overloaded"));
  EXPECT_THAT(std::string(late.message()), HasSubstr("1 running"));
  recorder.Release();
  EXPECT_TRUE(first.status().ok());
  EXPECT_THAT(recorder.batches(), ElementsAre(ElementsAre("first")));  // never run
  // Both waits are reported: the first request's (it found the layer idle), and the refused
  // one's, which waited until its deadline.
  absl::MutexLock lock(&mu);
  ASSERT_EQ(waits.size(), 2u);
  EXPECT_LT(waits[0], absl::Milliseconds(50));
  EXPECT_GE(waits[1], absl::Milliseconds(45));
}

TEST(RequestBatcherTest, ABatchThatStalledNoLongerHoldsItsLayersSlot) {
  // A batch whose shard call never answers: after stalled_after the next request of the layer
  // runs beside it instead of waiting for it until its own deadline.
  Recorder recorder;
  recorder.Hold("hung");
  RequestBatchingOptions options = NoLinger();
  options.stalled_after = absl::Milliseconds(100);
  RequestBatcher batcher(recorder.Fn(), options);
  const absl::Time before = absl::Now();
  Caller hung(batcher, 0, "hung");
  recorder.AwaitRunning(1);
  const absl::Status next = Caller(batcher, 0, "next", 1, absl::Now() + absl::Seconds(20)).status();
  EXPECT_TRUE(next.ok()) << next;
  EXPECT_GE(absl::Now() - before, absl::Milliseconds(100));  // it did wait until the stall
  EXPECT_THAT(recorder.batches(), ElementsAre(ElementsAre("hung"), ElementsAre("next")));
  recorder.Release();
  EXPECT_TRUE(hung.status().ok());
}

TEST(RequestBatcherTest, ACancelledRequestIsLeftOutOfItsBatch) {
  Recorder recorder;
  recorder.Hold("first");
  RequestBatcher batcher(recorder.Fn(), NoLinger());
  Caller first(batcher, 0, "first");
  recorder.AwaitRunning(1);
  Caller gone(batcher, 0, "gone");
  batcher.TEST_AwaitQueued(0, 1);
  Caller kept(batcher, 0, "kept");
  batcher.TEST_AwaitQueued(0, 2);
  gone.Cancel();
  recorder.Release();
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(kept.status().ok());
  EXPECT_THAT(recorder.batches(), ElementsAre(ElementsAre("first"), ElementsAre("kept")));
}

TEST(RequestBatcherTest, ALeaderLingersForTheCallersOfTheBatchThatJustFinished) {
  // A closed loop of three clients: after their batch is answered the first to come back leads
  // and, instead of going alone, waits for the other two. Their batch takes 2 s, so the leader
  // may linger up to 0.5 s.
  Recorder recorder;
  recorder.Hold("first");
  recorder.Slow("a", absl::Seconds(2));
  RequestBatcher batcher(recorder.Fn(), LongLinger());
  AnswerBehindAFirstBatch(batcher, recorder, {"a", "b", "c"});
  ASSERT_THAT(recorder.batches().back(), ElementsAre("a", "b", "c"));
  std::vector<std::unique_ptr<Caller>> back;
  std::atomic<int> lingered{0};
  batcher.TEST_SetHooks({[&](int) {
    ++lingered;
    // Meanwhile the other two come back.
    back.push_back(std::make_unique<Caller>(batcher, 0, "b2"));
    batcher.TEST_AwaitQueued(0, 2);
    back.push_back(std::make_unique<Caller>(batcher, 0, "c2"));
    batcher.TEST_AwaitQueued(0, 3);
  }});
  EXPECT_TRUE(Caller(batcher, 0, "a2").status().ok());
  for (auto& caller : back) EXPECT_TRUE(caller->status().ok());
  EXPECT_EQ(lingered.load(), 1);
  EXPECT_THAT(recorder.batches().back(), ElementsAre("a2", "b2", "c2"));
}

TEST(RequestBatcherTest, ALoneClientNeverLingers) {
  Recorder recorder;
  RequestBatcher batcher(recorder.Fn(), LongLinger());
  std::atomic<int> lingered{0};
  batcher.TEST_SetHooks({[&](int) { ++lingered; }});
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(Caller(batcher, 0, "alone").status().ok());
  EXPECT_EQ(lingered.load(), 0);
  EXPECT_EQ(recorder.batches().size(), 5u);
}

TEST(RequestBatcherTest, LingeringEndsWhenTheAwaitedCallersDoNotComeBack) {
  // Two callers were answered together; only one comes back. It goes alone once the linger
  // ends: after half of the last batch's time (1 s), not max_wait (an hour).
  Recorder recorder;
  recorder.Hold("first");
  recorder.Slow("b", absl::Seconds(2));
  RequestBatcher batcher(recorder.Fn(), LongLinger());
  AnswerBehindAFirstBatch(batcher, recorder, {"b", "c"});
  std::atomic<int> lingered{0};
  batcher.TEST_SetHooks({[&](int) { ++lingered; }});
  const absl::Time start = absl::Now();
  EXPECT_TRUE(Caller(batcher, 0, "alone").status().ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
  EXPECT_EQ(lingered.load(), 1);
  EXPECT_THAT(recorder.batches().back(), ElementsAre("alone"));
}

TEST(RequestBatcherTest, ALargeRequestGoesOutAloneAtOnceBesideABatch) {
  Recorder recorder;
  recorder.Hold("small");
  RequestBatchingOptions options = NoLinger();
  options.max_tokens = 8;
  RequestBatcher batcher(recorder.Fn(), options);
  Caller small(batcher, 0, "small");
  recorder.AwaitRunning(1);
  EXPECT_TRUE(Caller(batcher, 0, "quarter", 2).status().ok());  // 2 of 8 tokens: no waiting
  recorder.Release();
  EXPECT_TRUE(small.status().ok());
  EXPECT_THAT(recorder.batches(), ElementsAre(ElementsAre("small"), ElementsAre("quarter")));
}

TEST(RequestBatcherTest, BatchingOffRunsEveryRequestAloneAtOnce) {
  Recorder recorder;
  recorder.Hold("a");
  RequestBatchingOptions options;
  options.max_tokens = 0;
  RequestBatcher batcher(recorder.Fn(), options);
  Caller a(batcher, 0, "a");
  recorder.AwaitRunning(1);
  EXPECT_TRUE(Caller(batcher, 0, "b").status().ok());  // beside the held one
  recorder.Release();
  EXPECT_TRUE(a.status().ok());
}

}  // namespace
}  // namespace moe
