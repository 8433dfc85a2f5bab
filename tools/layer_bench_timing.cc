#include "tools/layer_bench_timing.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>

namespace moe {
namespace {

// User + system CPU time of this process so far, all threads.
double ProcessCpuMs() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto ms = [](const timeval& t) { return t.tv_sec * 1e3 + t.tv_usec / 1e3; };
  return ms(usage.ru_utime) + ms(usage.ru_stime);
}

std::chrono::steady_clock::time_point SecondsFromNow(double seconds) {
  return std::chrono::steady_clock::now() +
         std::chrono::duration_cast<std::chrono::steady_clock::duration>(
             std::chrono::duration<double>(seconds));
}

}  // namespace

std::vector<float> BenchTokens(int64_t n, int64_t d, int set) {
  std::vector<float> values(n * d);
  uint64_t state = 0x2545F4914F6CDD1Dull + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(set);
  for (float& v : values) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    v = static_cast<float>(state >> 40) / float(1 << 23) - 1.0f;
  }
  return values;
}

int TimeTokenCounts(const std::string& mode, const std::vector<int64_t>& tokens, size_t step_layers,
                    const TimingOptions& options, const std::function<bool(int64_t)>& run) {
  std::vector<std::vector<double>> ms(tokens.size());
  std::vector<double> cpu_ms(tokens.size(), 0.0);
  std::vector<int> warmups(tokens.size(), 0);
  for (int round = 0; round < std::max(1, options.rounds); ++round) {
    for (size_t k = 0; k < tokens.size(); ++k) {
      const auto warm_until = SecondsFromNow(options.warmup_seconds);
      for (int i = 0; i < options.warmup_requests || std::chrono::steady_clock::now() < warm_until;
           ++i, ++warmups[k]) {
        if (!run(tokens[k])) return 1;
      }
      const auto timed_until = SecondsFromNow(options.timed_seconds);
      for (int i = 0; i < options.requests || std::chrono::steady_clock::now() < timed_until; ++i) {
        const double cpu_start = ProcessCpuMs();
        const auto start = std::chrono::steady_clock::now();
        if (!run(tokens[k])) return 1;
        const double elapsed =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                .count();
        ms[k].push_back(elapsed);
        cpu_ms[k] += ProcessCpuMs() - cpu_start;
      }
    }
  }
  for (size_t k = 0; k < tokens.size(); ++k) {
    std::vector<double>& t = ms[k];
    std::sort(t.begin(), t.end());
    const double median = t[t.size() / 2];
    // With step_layers > 0 a "request" is a step of that many calls and the times are per step.
    std::printf(
        "{\"mode\": \"%s\", \"tokens\": %lld, \"step_layers\": %zu, \"requests\": %zu, "
        "\"p50_ms\": %.3f, \"p90_ms\": %.3f, \"mean_ms\": %.3f, \"tokens_per_s\": %.1f, "
        "\"cpu_ms_per_request\": %.3f, \"warmup_requests\": %d}\n",
        mode.c_str(), static_cast<long long>(tokens[k]), step_layers, t.size(), median,
        t[t.size() * 9 / 10], std::accumulate(t.begin(), t.end(), 0.0) / t.size(),
        tokens[k] / (median / 1000.0), cpu_ms[k] / t.size(), warmups[k]);
  }
  return 0;
}

}  // namespace moe
