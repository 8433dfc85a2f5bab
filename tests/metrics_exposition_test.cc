// The registry's output read back by an independent strict parser of the text format
// (prometheus_text_parser.h), alone and while many threads update it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/barrier.h"
#include "common/metrics/metric_registry.h"
#include "tests/prometheus_text_parser.h"

namespace moe {
namespace {

namespace prom = ::moe::testing_prom;

const prom::Family* Find(const std::vector<prom::Family>& families, const std::string& name) {
  for (const prom::Family& f : families) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

TEST(MetricsExpositionTest, StrictParserReadsBackEveryKindWithTrickyLabelsAndHelp) {
  MetricRegistry registry;
  CounterFamily* tokens = registry
                              .AddCounter("moe_router_tokens_total",
                                          "Tokens \\ routed\nper expert.", {"layer", "expert"})
                              .value();
  GaugeFamily* imbalance =
      registry.AddGauge("moe_router_load_imbalance", "max/mean.", {"layer"}).value();
  HistogramFamily* batch = registry
                               .AddHistogram("moe_expert_batch_tokens", "Tokens per FFN call.",
                                             {"layer"}, ExponentialBuckets(1, 2, 10))
                               .value();
  const std::string tricky = "q\"uote \\back\nnew ünïcode,}={";
  tokens->WithLabels({"0", "3"}).value()->Increment(40);
  tokens->WithLabels({tricky, "4"}).value()->Increment(2);
  imbalance->WithLabels({"0"}).value()->Set(1.5);
  for (int i = 1; i <= 1000; ++i) batch->WithLabels({"0"}).value()->Observe(i);

  absl::StatusOr<std::vector<prom::Family>> parsed = prom::ParseText(registry.TextExposition());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->size(), 3u);
  const prom::Family& t = (*parsed)[0];
  EXPECT_EQ(t.name, "moe_router_tokens_total");
  EXPECT_EQ(t.type, "counter");
  EXPECT_EQ(t.help, "Tokens \\ routed\nper expert.");
  ASSERT_EQ(t.samples.size(), 2u);
  EXPECT_EQ(t.samples[0].labels,
            (std::map<std::string, std::string>{{"layer", "0"}, {"expert", "3"}}));
  EXPECT_EQ(t.samples[0].value, 40);
  EXPECT_EQ(t.samples[1].labels.at("layer"), tricky);
  EXPECT_EQ((*parsed)[1].samples.at(0).value, 1.5);

  const prom::Family& b = (*parsed)[2];
  EXPECT_EQ(b.type, "histogram");
  ASSERT_EQ(b.samples.size(), 11u + 2u);  // 10 bounds, +Inf, _sum, _count
  EXPECT_EQ(b.samples[0].labels.at("le"), "1");
  EXPECT_EQ(b.samples[0].value, 1);
  EXPECT_EQ(b.samples[9].labels.at("le"), "512");
  EXPECT_EQ(b.samples[9].value, 512);
  EXPECT_EQ(b.samples[10].labels.at("le"), "+Inf");
  EXPECT_EQ(b.samples[10].value, 1000);
  EXPECT_EQ(b.samples[11].value, 500500);
}

TEST(MetricsExpositionTest, ParserRejectsWhatTheFormatForbids) {
  // The parser must be able to fail, or the test above proves nothing.
  EXPECT_FALSE(prom::ParseText("a 1").ok());                           // no final newline
  EXPECT_FALSE(prom::ParseText("a{l=\"x\\t\"} 1\n").ok());             // bad escape
  EXPECT_FALSE(prom::ParseText("a 1\nb 1\na 2\n").ok());               // not contiguous
  EXPECT_FALSE(prom::ParseText("a{l=\"x\"} 1\na{l=\"x\"} 2\n").ok());  // duplicate series
  EXPECT_FALSE(prom::ParseText("# TYPE c counter\nc -1\n").ok());      // negative counter
  EXPECT_FALSE(prom::ParseText("# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"
                               "h_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n")
                   .ok());  // decreasing buckets
  EXPECT_FALSE(prom::ParseText("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0\n"
                               "h_count 1\n")
                   .ok());  // _count != +Inf
}

TEST(MetricsExpositionTest, ConcurrentIncrementsAndObservationsAreExact) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 100000;
  constexpr int kExperts = 4;
  MetricRegistry registry;
  CounterFamily* tokens = registry.AddCounter("tokens_total", "T.", {"expert"}).value();
  HistogramFamily* sizes = registry.AddHistogram("sizes", "S.", {}, {1, 2, 3}).value();
  Histogram* h = sizes->WithLabels({}).value();
  GaugeFamily* inflight = registry.AddGauge("inflight", "I.").value();
  Gauge* g = inflight->WithLabels({}).value();

  absl::Barrier* start = new absl::Barrier(kThreads + 1);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Every thread resolves its own handles, racing on the first resolution.
      std::vector<Counter*> counters;
      for (int e = 0; e < kExperts; ++e) {
        counters.push_back(tokens->WithLabels({absl::StrCat(e)}).value());
      }
      if (start->Block()) delete start;
      for (int i = 0; i < kPerThread; ++i) {
        counters[i % kExperts]->Increment();
        h->Observe(t % 4);  // 0 and 1 land in le=1, 2 in le=2, 3 in le=3
        g->Increment();
        g->Decrement();
      }
    });
  }
  // Scrape while the threads run: every snapshot must be well-formed.
  if (start->Block()) delete start;
  for (int i = 0; i < 20; ++i) {
    absl::StatusOr<std::vector<prom::Family>> mid = prom::ParseText(registry.TextExposition());
    ASSERT_TRUE(mid.ok()) << mid.status();
  }
  for (std::thread& t : threads) t.join();

  absl::StatusOr<std::vector<prom::Family>> parsed = prom::ParseText(registry.TextExposition());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const prom::Family* t = Find(*parsed, "tokens_total");
  ASSERT_NE(t, nullptr);
  ASSERT_EQ(t->samples.size(), static_cast<size_t>(kExperts));
  for (const prom::Sample& s : t->samples) {
    EXPECT_EQ(s.value, kThreads * kPerThread / kExperts) << s.labels.at("expert");
  }
  const Histogram::Snapshot snap = h->Read();
  EXPECT_EQ(snap.count, static_cast<uint64_t>(kThreads) * kPerThread);
  // Threads t%4 == 0 or 1 observe into le=1, 2 into le=2, 3 into le=3.
  EXPECT_EQ(snap.cumulative, (std::vector<uint64_t>{4 * kPerThread, 6 * kPerThread, 8 * kPerThread,
                                                    8 * kPerThread}));
  EXPECT_EQ(snap.sum, 2.0 * kPerThread * (0 + 1 + 2 + 3));
  EXPECT_EQ(g->Value(), 0);
}

}  // namespace
}  // namespace moe
