// The router's per-replica metric series follow its --shards_file (rewritten for real and re-read
// by ShardsFile, as moe_router does): a target taken out of the file takes every series labelled
// with it out of the scrape, the targets still listed keep theirs (counts and all), the scrape
// stays the same size however many targets come and go, and a call still in flight on a removed
// target records nothing. Fake shards in process (tests/router_test_fakes.h); every wait is a
// bounded poll of the scrape or of the directory, never a sleep.
#include <stdio.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/metrics/metric_registry.h"
#include "gtest/gtest.h"
#include "router_service/router.h"
#include "router_service/shards_file.h"
#include "testing/cluster.h"
#include "testing/test_models.h"
#include "tests/prometheus_text_parser.h"
#include "tests/router_test_fakes.h"

namespace moe::router_test {
namespace {

constexpr char kKept[] = "kept:1";  // holds experts 0-3; every other target holds 4-7
const absl::Duration kWait = absl::Seconds(20);

std::string Pod(int i) { return absl::StrCat("10.0.", i / 250, ".", i % 250, ":50061"); }

// One scrape of the registry, checked by the strict parser: how many samples carry each
// `replica` label value, and each one's OK shard calls.
struct Scraped {
  std::string text;
  size_t lines = 0;
  std::map<std::string, int> samples;
  std::map<std::string, double> ok_calls;

  int SamplesOf(const std::string& target) const {
    auto it = samples.find(target);
    return it == samples.end() ? 0 : it->second;
  }
};

class RemovedTargetMetricsTest : public RouterTest {
 protected:
  // A router over `targets`, listed in a shards file it polls every 5 ms; targets in `deferred`
  // hold their calls until the test releases them (FakeShard::RunDeferred).
  void Start(const std::vector<std::string>& targets, std::set<std::string> deferred = {}) {
    {
      absl::MutexLock lock(&mu_);
      deferred_ = std::move(deferred);
    }
    path_ = testing::MakeTempDir("removed-target-metrics") + "/shards.txt";
    WriteShardsFile(targets);
    RouterOptions options;
    options.model_dir = *model_dir_;
    options.shards = ShardsFile::Read(path_).value();
    options.metrics = &registry_;
    options.hedging = false;  // a held call stays on its target
    options.directory.refresh_interval = absl::Milliseconds(5);
    auto router = Router::Create(options, [this](const std::string& target) {
      ShardDescription description{{0}, ExpertSet(), shard_->identity()};
      description.experts.ids =
          target == kKept ? std::vector<int>{0, 1, 2, 3} : std::vector<int>{4, 5, 6, 7};
      absl::MutexLock lock(&mu_);
      auto fake = std::make_unique<FakeShard>(
          target, description, shard_,
          deferred_.count(target) != 0 ? Behaviour::kDeferred : Behaviour::kCompute);
      shards_[target] = fake.get();
      return fake;
    });
    ASSERT_TRUE(router.ok()) << router.status();
    router_ = std::move(*router);
    file_.emplace(path_, 8, false);
    router_->directory().StartRefreshing([this] { return file_->Changed(); });
  }

  // Replaces the file atomically, as an operator (or a ConfigMap) would.
  void WriteShardsFile(const std::vector<std::string>& targets) {
    const std::string temporary = path_ + ".new";
    {
      std::ofstream out(temporary);
      out << absl::StrJoin(targets, "\n") << "\n";
    }
    // No timestamp games: ShardsFile compares contents, so versions written within one tick of
    // the file system's clock (same modification time) are each seen.
    ASSERT_EQ(rename(temporary.c_str(), path_.c_str()), 0);
  }

  Scraped Scrape() {
    Scraped s;
    s.text = registry_.TextExposition();
    s.lines = static_cast<size_t>(std::count(s.text.begin(), s.text.end(), '\n'));
    auto parsed = testing_prom::ParseText(s.text);
    EXPECT_TRUE(parsed.ok()) << parsed.status() << "\n" << s.text;
    if (!parsed.ok()) return s;
    for (const testing_prom::Family& family : *parsed) {
      for (const testing_prom::Sample& sample : family.samples) {
        auto replica = sample.labels.find("replica");
        if (replica == sample.labels.end()) continue;
        ++s.samples[replica->second];
        auto code = sample.labels.find("code");
        if (sample.name == "moe_router_shard_calls_total" && code != sample.labels.end() &&
            code->second == "OK") {
          s.ok_calls[replica->second] += sample.value;
        }
      }
    }
    return s;
  }

  // Polls the scrape until `done` holds of it or kWait passes; the last scrape in *last.
  bool ScrapeUntil(const std::function<bool(const Scraped&)>& done, Scraped* last) {
    return testing::WaitFor(
        [&] {
          *last = Scrape();
          return done(*last);
        },
        kWait);
  }

  void ForwardOk(uint64_t seed) {
    Matrix out;
    auto result = Forward(*router_, testing::RandomTokens(16, 256, seed), out);
    EXPECT_TRUE(result.ok()) << result.status();
  }

  FakeShard* ShardOf(const std::string& target) {
    absl::MutexLock lock(&mu_);
    return shards_[target];
  }

  // Declared before router_, so destroyed after it (and its refresher, which reads file_).
  MetricRegistry registry_;
  std::string path_;
  std::optional<ShardsFile> file_;
  absl::Mutex mu_;
  std::set<std::string> deferred_ ABSL_GUARDED_BY(mu_);
  // The fakes made, by target; a fake lives as long as its replica (while listed, or in use).
  std::map<std::string, FakeShard*> shards_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Router> router_;
};

TEST_F(RemovedTargetMetricsTest, SeriesOfTargetsSwappedOutLeaveTheScrapeAndTheKeptOnesStay) {
  Start({kKept, Pod(0)});
  Scraped s;
  ASSERT_TRUE(ScrapeUntil(
      [](const Scraped& s) {
        return s.SamplesOf(kKept) > 0 && s.SamplesOf(Pod(0)) == s.SamplesOf(kKept);
      },
      &s))
      << s.text;
  const int per_target = s.SamplesOf(kKept);  // calls by code, their latency, ejections
  ForwardOk(1);
  const Scraped first = Scrape();
  const double kept_calls = first.ok_calls.at(kKept);
  EXPECT_GT(kept_calls, 0);
  EXPECT_GT(first.ok_calls.at(Pod(0)), 0);

  constexpr int kSwaps = 50;  // pod IPs, as a rolling restart or an autoscaler leaves them
  for (int i = 1; i <= kSwaps; ++i) {
    WriteShardsFile({kKept, Pod(i)});
    ASSERT_TRUE(ScrapeUntil(
        [&](const Scraped& s) {
          return s.SamplesOf(Pod(i)) == per_target && s.SamplesOf(Pod(i - 1)) == 0;
        },
        &s))
        << "swap " << i << ": " << Pod(i - 1) << " has " << s.SamplesOf(Pod(i - 1)) << " samples, "
        << Pod(i) << " " << s.SamplesOf(Pod(i));
    if (i % 10 == 0) ForwardOk(100 + i);
  }

  const Scraped last = Scrape();
  for (int i = 0; i < kSwaps; ++i) EXPECT_EQ(last.SamplesOf(Pod(i)), 0) << Pod(i);
  EXPECT_EQ(last.samples.size(), 2u) << last.text;  // kept and the last pod, nothing else
  EXPECT_EQ(last.SamplesOf(kKept), per_target);
  EXPECT_GT(last.ok_calls.at(kKept), kept_calls);  // never reset: counted on throughout
  EXPECT_GT(last.ok_calls.at(Pod(kSwaps)), 0);
  // Bounded: the same series as after the first swap, only the counts grew.
  EXPECT_EQ(last.lines, first.lines);
  EXPECT_LT(last.text.size(), first.text.size() + first.text.size() / 10);
}

TEST_F(RemovedTargetMetricsTest, ACallInFlightOnARemovedTargetRecordsNothing) {
  const std::string held = Pod(1), next = Pod(2), later = Pod(3);
  Start({kKept, held}, {held});
  Scraped s;
  ASSERT_TRUE(ScrapeUntil([&](const Scraped& s) { return s.SamplesOf(held) > 0; }, &s));
  const int per_target = s.SamplesOf(held);
  // Holds the replica (and its fake) past its removal, as the call's fan-out does.
  const std::shared_ptr<const ReplicaMap> map = router_->directory().replica_map();
  FakeShard* fake = ShardOf(held);
  std::thread call([&] { ForwardOk(7); });  // 16 tokens: some choose experts 4-7
  absl::Cleanup answer = [&] {
    fake->RunDeferred();
    call.join();
  };
  ASSERT_TRUE(fake->AwaitCalls(1, kWait));

  WriteShardsFile({kKept, next});
  ASSERT_TRUE(ScrapeUntil(
      [&](const Scraped& s) { return s.SamplesOf(held) == 0 && s.SamplesOf(next) == per_target; },
      &s))
      << s.text;
  std::move(answer).Invoke();  // the held call answers now, after its target's series are gone
  EXPECT_EQ(Scrape().SamplesOf(held), 0);
  // Nor does a later refresh bring them back: by the time the next swap shows, it has run.
  WriteShardsFile({kKept, later});
  ASSERT_TRUE(ScrapeUntil([&](const Scraped& s) { return s.SamplesOf(later) == per_target; }, &s));
  EXPECT_EQ(s.SamplesOf(held), 0) << s.text;
  EXPECT_EQ(s.SamplesOf(next), 0) << s.text;
}

TEST_F(RemovedTargetMetricsTest, ATargetRedeclaredInTheFileKeepsItsSeriesAndCounts) {
  const std::string pod = Pod(1);
  Start({kKept, pod});
  Scraped s;
  ASSERT_TRUE(ScrapeUntil([&](const Scraped& s) { return s.SamplesOf(pod) > 0; }, &s));
  ForwardOk(3);
  const Scraped before = Scrape();
  ASSERT_GT(before.ok_calls.at(pod), 0);

  // Still listed, now with its experts declared: a new replica for it, the same series.
  WriteShardsFile({kKept, "4-7@" + pod});
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        for (const TargetStatus& status : router_->directory().Status()) {
          if (status.target == pod && status.declared.has_value() && status.state == "SERVING") {
            return true;
          }
        }
        return false;
      },
      kWait));
  ForwardOk(4);
  const Scraped after = Scrape();
  EXPECT_EQ(after.SamplesOf(pod), before.SamplesOf(pod));
  EXPECT_GT(after.ok_calls.at(pod), before.ok_calls.at(pod));
}

}  // namespace
}  // namespace moe::router_test
