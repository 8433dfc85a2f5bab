// The hot-path cost of metrics: a labelled counter increment, a histogram observation, a gauge
// inc/dec through pre-resolved handles and the clock read that times a duration, against the
// label lookup they avoid and a full scrape. scripts/metrics-overhead multiplies the first four by
// how often one request makes them.
//   build/bench/moe_metrics_bench
#include <benchmark/benchmark.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/metrics/metric_registry.h"

namespace moe {
namespace {

MetricRegistry& Registry() {
  static MetricRegistry* registry = [] {
    auto* r = new MetricRegistry();
    CounterFamily* tokens =
        r->AddCounter("moe_router_tokens_total", "Tokens.", {"layer", "expert"}).value();
    for (int layer = 0; layer < 64; ++layer) {
      for (int expert = 0; expert < 64; ++expert) {
        tokens->WithLabels({absl::StrCat(layer), absl::StrCat(expert)}).value();
      }
    }
    r->AddHistogram("moe_router_request_duration_seconds", "Latency.", {},
                    ExponentialBuckets(0.0001, 2, 18))
        .value();
    r->AddGauge("moe_router_inflight_requests", "In flight.").value();
    return r;
  }();
  return *registry;
}

CounterFamily* Tokens() {
  static CounterFamily* f = Registry().AddCounter("bench_tokens_total", "x", {"expert"}).value();
  return f;
}

void BM_CounterIncrement(benchmark::State& state) {
  // Each thread its own series (as different experts), or all threads one series (contended).
  const bool shared = state.range(0) == 1;
  Counter* c =
      Tokens()->WithLabels({shared ? "shared" : absl::StrCat("t", state.thread_index())}).value();
  for (auto _ : state) c->Increment();
  benchmark::DoNotOptimize(c->Value());
}
BENCHMARK(BM_CounterIncrement)->Arg(0)->Arg(1)->ThreadRange(1, 2)->ArgName("shared");

void BM_HistogramObserve(benchmark::State& state) {
  static HistogramFamily* f =
      Registry().AddHistogram("bench_seconds", "x", {}, ExponentialBuckets(0.0001, 2, 18)).value();
  Histogram* h = f->WithLabels({}).value();
  double v = 0.00005;
  for (auto _ : state) {
    h->Observe(v);
    v = v < 10 ? v * 1.7 : 0.00005;  // walk the buckets
  }
}
BENCHMARK(BM_HistogramObserve)->ThreadRange(1, 2);

void BM_GaugeIncrementDecrement(benchmark::State& state) {
  static GaugeFamily* f = Registry().AddGauge("bench_inflight", "x").value();
  Gauge* g = f->WithLabels({}).value();
  for (auto _ : state) {
    g->Increment();
    g->Decrement();
  }
}
BENCHMARK(BM_GaugeIncrementDecrement);

// What timing a histogram's duration adds: one clock read (the services use absl::Now()).
void BM_ClockRead(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(absl::Now());
}
BENCHMARK(BM_ClockRead);

// What pre-resolving saves: finding the series by label values on every event.
void BM_WithLabelsLookup(benchmark::State& state) {
  const std::vector<std::string> labels = {"3"};
  Tokens()->WithLabels(labels).value();
  for (auto _ : state) benchmark::DoNotOptimize(Tokens()->WithLabels(labels).value());
}
BENCHMARK(BM_WithLabelsLookup);

// A scrape of 64 layers x 64 experts of token counters plus a histogram.
void BM_TextExposition4096Series(benchmark::State& state) {
  Registry();
  for (auto _ : state) benchmark::DoNotOptimize(Registry().TextExposition());
}
BENCHMARK(BM_TextExposition4096Series)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace moe

BENCHMARK_MAIN();
