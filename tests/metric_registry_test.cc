#include "common/metrics/metric_registry.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/metrics/text_format.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

TEST(MetricRegistryTest, WritesCountersGaugesAndHistogramsInTextFormat) {
  MetricRegistry registry;
  CounterFamily* requests =
      registry.AddCounter("moe_router_requests_total", "Requests by final status.", {"code"})
          .value();
  GaugeFamily* inflight =
      registry.AddGauge("moe_router_inflight_requests", "Requests being served.").value();
  HistogramFamily* latency =
      registry
          .AddHistogram("moe_router_request_duration_seconds", "Request latency.", {}, {0.25, 1, 4})
          .value();
  requests->WithLabels({"OK"}).value()->Increment(3);
  requests->WithLabels({"UNAVAILABLE"}).value()->Increment();
  inflight->WithLabels({}).value()->Set(2);
  Histogram* h = latency->WithLabels({}).value();
  h->Observe(0.25);  // a bound is inclusive
  h->Observe(0.5);
  h->Observe(8);

  EXPECT_EQ(registry.TextExposition(),
            "# HELP moe_router_requests_total Requests by final status.\n"
            "# TYPE moe_router_requests_total counter\n"
            "moe_router_requests_total{code=\"OK\"} 3\n"
            "moe_router_requests_total{code=\"UNAVAILABLE\"} 1\n"
            "# HELP moe_router_inflight_requests Requests being served.\n"
            "# TYPE moe_router_inflight_requests gauge\n"
            "moe_router_inflight_requests 2\n"
            "# HELP moe_router_request_duration_seconds Request latency.\n"
            "# TYPE moe_router_request_duration_seconds histogram\n"
            "moe_router_request_duration_seconds_bucket{le=\"0.25\"} 1\n"
            "moe_router_request_duration_seconds_bucket{le=\"1\"} 2\n"
            "moe_router_request_duration_seconds_bucket{le=\"4\"} 2\n"
            "moe_router_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"
            "moe_router_request_duration_seconds_sum 8.75\n"
            "moe_router_request_duration_seconds_count 3\n");
}

TEST(MetricRegistryTest, UnlabelledFamiliesAreExportedAtZeroLabelledOnesOnceResolved) {
  MetricRegistry registry;
  ASSERT_TRUE(registry.AddCounter("a_total", "A.").ok());
  CounterFamily* b = registry.AddCounter("b_total", "B.", {"expert"}).value();
  EXPECT_EQ(registry.TextExposition(), "# HELP a_total A.\n# TYPE a_total counter\na_total 0\n");
  b->WithLabels({"7"}).value();
  EXPECT_THAT(registry.TextExposition(), HasSubstr("b_total{expert=\"7\"} 0\n"));
}

TEST(MetricRegistryTest, SameLabelValuesResolveToTheSameCell) {
  MetricRegistry registry;
  CounterFamily* tokens = registry.AddCounter("t_total", "T.", {"layer", "expert"}).value();
  Counter* first = tokens->WithLabels({"0", "3"}).value();
  EXPECT_EQ(tokens->WithLabels({"0", "3"}).value(), first);
  EXPECT_NE(tokens->WithLabels({"3", "0"}).value(), first);
}

TEST(MetricRegistryTest, EscapesLabelValuesAndHelp) {
  MetricRegistry registry;
  CounterFamily* c = registry.AddCounter("c_total", "Back\\slash and\nnewline.", {"v"}).value();
  c->WithLabels({"a\"b\\c\nd"}).value()->Increment();
  EXPECT_EQ(registry.TextExposition(),
            "# HELP c_total Back\\\\slash and\\nnewline.\n"
            "# TYPE c_total counter\n"
            "c_total{v=\"a\\\"b\\\\c\\nd\"} 1\n");
}

TEST(MetricRegistryTest, GaugeAddsAndFormatsSpecialValues) {
  MetricRegistry registry;
  GaugeFamily* g = registry.AddGauge("g", "G.", {"k"}).value();
  Gauge* x = g->WithLabels({"x"}).value();
  x->Increment();
  x->Add(0.25);
  x->Decrement();
  EXPECT_EQ(x->Value(), 0.25);
  g->WithLabels({"inf"}).value()->Set(HUGE_VAL);
  g->WithLabels({"nan"}).value()->Set(NAN);
  const std::string text = registry.TextExposition();
  EXPECT_THAT(text, HasSubstr("g{k=\"x\"} 0.25\n"));
  EXPECT_THAT(text, HasSubstr("g{k=\"inf\"} +Inf\n"));
  EXPECT_THAT(text, HasSubstr("g{k=\"nan\"} NaN\n"));
}

TEST(MetricRegistryTest, HistogramWithLabelsPutsLeLast) {
  MetricRegistry registry;
  HistogramFamily* h =
      registry.AddHistogram("call_seconds", "C.", {"group", "replica"}, {0.5}).value();
  h->WithLabels({"0-3", "1"}).value()->Observe(1);
  EXPECT_THAT(registry.TextExposition(),
              HasSubstr("call_seconds_bucket{group=\"0-3\",replica=\"1\",le=\"0.5\"} 0\n"
                        "call_seconds_bucket{group=\"0-3\",replica=\"1\",le=\"+Inf\"} 1\n"
                        "call_seconds_sum{group=\"0-3\",replica=\"1\"} 1\n"
                        "call_seconds_count{group=\"0-3\",replica=\"1\"} 1\n"));
}

TEST(MetricRegistryTest, RefusesBadNamesAndLabelCounts) {
  MetricRegistry registry;
  EXPECT_EQ(registry.AddCounter("1abc", "x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddCounter("a-b", "x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddGauge("g", "x", {"__reserved"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddGauge("g", "x", {"a", "a"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddHistogram("h", "x", {"le"}, {1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  CounterFamily* c = registry.AddCounter("c_total", "x", {"code"}).value();
  absl::StatusOr<Counter*> wrong = c->WithLabels({"OK", "extra"});
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong.status().message(), HasSubstr("c_total has labels {code}"));
}

TEST(MetricRegistryTest, RefusesBucketsThatDoNotIncrease) {
  MetricRegistry registry;
  absl::StatusOr<HistogramFamily*> h = registry.AddHistogram("h", "x", {}, {1, 1});
  EXPECT_EQ(h.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(h.status().message(), HasSubstr("1 is followed by 1"));
  EXPECT_EQ(registry.AddHistogram("h", "x", {}, {1, HUGE_VAL}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MetricRegistryTest, RefusesNamesTakenIncludingHistogramSampleNames) {
  MetricRegistry registry;
  ASSERT_TRUE(registry.AddHistogram("lat_seconds", "x", {}, {1}).ok());
  EXPECT_EQ(registry.AddCounter("lat_seconds_count", "x").status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry.AddGauge("lat_seconds", "x").status().code(),
            absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(registry.AddCounter("x_sum", "x").ok());
  EXPECT_EQ(registry.AddHistogram("x", "x", {}, {1}).status().code(),
            absl::StatusCode::kAlreadyExists);
}

TEST(MetricRegistryTest, BucketHelpers) {
  EXPECT_EQ(ExponentialBuckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
  EXPECT_EQ(LinearBuckets(0.5, 0.5, 3), (std::vector<double>{0.5, 1, 1.5}));
}

TEST(TextFormatTest, FormatsShortestRoundTrip) {
  EXPECT_EQ(FormatSampleValue(0.1), "0.1");
  EXPECT_EQ(FormatSampleValue(3), "3");
  EXPECT_EQ(FormatSampleValue(-HUGE_VAL), "-Inf");
  EXPECT_EQ(std::stod(FormatSampleValue(1.0 / 3)), 1.0 / 3);
  // Go's strconv 'g', as Prometheus' clients write le: fixed for exponents in [-4, 21).
  EXPECT_EQ(FormatSampleValue(0.0001), "0.0001");
  EXPECT_EQ(FormatSampleValue(0.00005), "5e-05");
  EXPECT_EQ(FormatSampleValue(0.0025), "0.0025");
  EXPECT_EQ(FormatSampleValue(1234567), "1234567");
  EXPECT_EQ(FormatSampleValue(1e6), "1000000");
  EXPECT_EQ(FormatSampleValue(13.1072), "13.1072");
  EXPECT_EQ(FormatSampleValue(-2.5), "-2.5");
  EXPECT_EQ(FormatSampleValue(0), "0");
  EXPECT_EQ(FormatSampleValue(1e20), "100000000000000000000");
  EXPECT_EQ(FormatSampleValue(1e21), "1e+21");
  EXPECT_EQ(FormatSampleValue(-1.5e-7), "-1.5e-07");
}

}  // namespace
}  // namespace moe
