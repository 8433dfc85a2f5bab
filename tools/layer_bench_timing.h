// moe_layer_bench's measuring: its synthetic token sets and the timing loop that prints one JSON
// line per token count (tokens/s from the median request, p50/p90, this process's CPU per timed
// request, and how many warm-up and timed requests it made).
#ifndef MOE_TOOLS_LAYER_BENCH_TIMING_H_
#define MOE_TOOLS_LAYER_BENCH_TIMING_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace moe {

// Token set `set` (0, 1, ...) of n × d values in [-1, 1).
std::vector<float> BenchTokens(int64_t n, int64_t d, int set = 0);

struct TimingOptions {
  int rounds = 1;             // over the token counts, alternating them
  int requests = 20;          // timed per count and round, at least
  double timed_seconds = 0;   // ... and more until this long passed
  int warmup_requests = 2;    // untimed before them, at least
  double warmup_seconds = 0;  // ... and more until this long passed
};

// Times run(n) for each n of `tokens` as `options` say and prints a JSON line per count, naming
// `mode`; with step_layers > 0 a "request" is a step of that many calls. run returns false on a
// failure it reported: then 1, else 0.
int TimeTokenCounts(const std::string& mode, const std::vector<int64_t>& tokens, size_t step_layers,
                    const TimingOptions& options, const std::function<bool(int64_t)>& run);

}  // namespace moe

#endif  // MOE_TOOLS_LAYER_BENCH_TIMING_H_
