// MetricFamily's series removal (RemoveMatching): what leaves the exposition, what stays, and a
// value resolved again afterwards.
#include "common/metrics/metric_family.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/metrics/metric_registry.h"

namespace moe {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(MetricFamilyTest, RemoveMatchingDropsEverySeriesWithTheValueAndKeepsTheRestInOrder) {
  MetricRegistry registry;
  CounterFamily* calls =
      registry.AddCounter("calls_total", "C.", {"shard_group", "replica", "code"}).value();
  for (const char* group : {"0-3", "4-7"}) {
    for (const char* replica : {"a:1", "b:2"}) {
      for (const char* code : {"OK", "UNAVAILABLE"}) {
        calls->WithLabels({group, replica, code}).value()->Increment();
      }
    }
  }
  EXPECT_EQ(calls->RemoveMatching("replica", "a:1"), 4u);
  EXPECT_EQ(registry.TextExposition(),
            "# HELP calls_total C.\n"
            "# TYPE calls_total counter\n"
            "calls_total{shard_group=\"0-3\",replica=\"b:2\",code=\"OK\"} 1\n"
            "calls_total{shard_group=\"0-3\",replica=\"b:2\",code=\"UNAVAILABLE\"} 1\n"
            "calls_total{shard_group=\"4-7\",replica=\"b:2\",code=\"OK\"} 1\n"
            "calls_total{shard_group=\"4-7\",replica=\"b:2\",code=\"UNAVAILABLE\"} 1\n");
}

TEST(MetricFamilyTest, AHistogramSeriesLeavesWithEveryOneOfItsSamples) {
  MetricRegistry registry;
  HistogramFamily* h =
      registry.AddHistogram("call_seconds", "C.", {"group", "replica"}, {0.5, 1}).value();
  h->WithLabels({"0-3", "a:1"}).value()->Observe(0.25);
  h->WithLabels({"0-3", "b:2"}).value()->Observe(2);
  ASSERT_EQ(h->RemoveMatching("replica", "a:1"), 1u);
  const std::string text = registry.TextExposition();
  EXPECT_THAT(text, Not(HasSubstr("a:1")));
  EXPECT_THAT(text, HasSubstr("call_seconds_bucket{group=\"0-3\",replica=\"b:2\",le=\"0.5\"} 0\n"
                              "call_seconds_bucket{group=\"0-3\",replica=\"b:2\",le=\"1\"} 0\n"
                              "call_seconds_bucket{group=\"0-3\",replica=\"b:2\",le=\"+Inf\"} 1\n"
                              "call_seconds_sum{group=\"0-3\",replica=\"b:2\"} 2\n"
                              "call_seconds_count{group=\"0-3\",replica=\"b:2\"} 1\n"));
  // A family whose last series is removed leaves the exposition, header and all.
  ASSERT_EQ(h->RemoveMatching("group", "0-3"), 1u);
  EXPECT_EQ(registry.TextExposition(), "");
}

TEST(MetricFamilyTest, AnUnknownLabelOrValueRemovesNothing) {
  MetricRegistry registry;
  GaugeFamily* g = registry.AddGauge("g", "G.", {"replica"}).value();
  GaugeFamily* unlabelled = registry.AddGauge("u", "U.").value();
  g->WithLabels({"a:1"}).value()->Set(3);
  const std::string before = registry.TextExposition();
  EXPECT_EQ(g->RemoveMatching("replica", "a:2"), 0u);
  EXPECT_EQ(g->RemoveMatching("shard", "a:1"), 0u);
  EXPECT_EQ(unlabelled->RemoveMatching("replica", ""), 0u);
  EXPECT_EQ(registry.TextExposition(), before);
}

TEST(MetricFamilyTest, ASeriesResolvedAgainAfterRemovalIsANewOneFromZero) {
  MetricRegistry registry;
  CounterFamily* c = registry.AddCounter("c_total", "C.", {"replica"}).value();
  c->WithLabels({"a:1"}).value()->Increment(5);
  c->WithLabels({"b:2"}).value()->Increment(2);
  ASSERT_EQ(c->RemoveMatching("replica", "a:1"), 1u);
  Counter* again = c->WithLabels({"a:1"}).value();
  EXPECT_EQ(again->Value(), 0u);
  EXPECT_EQ(c->WithLabels({"a:1"}).value(), again);
  EXPECT_EQ(registry.TextExposition(),
            "# HELP c_total C.\n# TYPE c_total counter\n"
            "c_total{replica=\"b:2\"} 2\n"
            "c_total{replica=\"a:1\"} 0\n");
}

// Series that come and go on one thread do not disturb a series updated (lock-free) and scraped
// on others: every increment of the kept series is counted.
TEST(MetricFamilyTest, RemovingOtherSeriesWhileOneIsUpdatedLosesNoUpdate) {
  MetricRegistry registry;
  CounterFamily* c = registry.AddCounter("c_total", "C.", {"replica"}).value();
  Counter* kept = c->WithLabels({"kept"}).value();
  constexpr int kRounds = 2000;
  std::atomic<bool> churned{false};
  std::thread churn([&] {
    for (int i = 0; i < kRounds; ++i) {
      const std::string target = absl::StrCat("pod-", i % 7);
      c->WithLabels({target}).value()->Increment();
      EXPECT_EQ(c->RemoveMatching("replica", target), 1u);
    }
    churned = true;
  });
  int increments = 0;
  while (!churned) {
    kept->Increment();
    ++increments;
    EXPECT_THAT(registry.TextExposition(), HasSubstr("c_total{replica=\"kept\"} "));
  }
  churn.join();
  EXPECT_EQ(registry.TextExposition(),
            absl::StrCat("# HELP c_total C.\n# TYPE c_total counter\nc_total{replica=\"kept\"} ",
                         increments, "\n"));
}

}  // namespace
}  // namespace moe
