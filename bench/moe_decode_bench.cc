// moe_decode_bench: the decode regime (1-8 tokens) on a layer the size of a real one and larger
// than the last-level cache, with expert weights kept as f32, bf16 and int8 side by side, printed
// as one JSON object on stdout (progress on stderr).
//
// The layer is OLMoE-1B-7B's MoE block shape (--shape=olmoe: d_model 2048, 64 experts of width
// 1024, top-8; 1.6 GB of f32 experts, 0.8 GB bf16, 0.4 GB int8) or Qwen3-30B-A3B's
// (--shape=qwen3: 128 experts of width 768; 2.4 GB f32, 0.6 GB int8), synthetic Gaussian weights
// (std 1/√fan_in). A decode step is M tokens through 8 experts (one FFN call of M tokens per
// expert, the best case of M tokens sharing their experts); the steps take the 64 experts
// round-robin, so a pass of 8 steps reads every expert once and every call streams its weights from
// DRAM. Each round times one pass per (M, storage), each bracketed by read-bandwidth passes over 1
// GB on the same threads (the best of summing passes reading 1, 2, 4 and 8 streams per task with
// and without software prefetch, and a row-dot pass). The timed pass follows an untimed one over
// the same experts, as a shard under steady load reads them: on a paravirtualised Zen 5 the first
// pass after a pause of the kernel (the bracket, other work, at times sleep) read 15-25% slower
// than the next (README "The first pass after a pause"). Medians over rounds:
//
//   tokens_per_s[storage][M]        M ÷ seconds per step
//   bandwidth_fraction[storage][M]  weight bytes per step ÷ seconds ÷ read bandwidth
//   first_pass_fraction[storage]    the same for the untimed pass at M = 1, the first after the
//                                   bracket: what a pause of the kernel costs the pass after it
//   int8_vs_bf16_one_token          tokens/s with int8 ÷ with bf16 at M = 1 (target ≥ 1.8)
//   one_token_streams[storage]      M = 1 with the one-token dots reading 1 and 4 weight streams
//                                   per thread (SwigluOptions::one_token_streams) in turn, two
//                                   passes each per round: tokens/s and four_vs_one, the median of
//                                   the rounds' ratios (> 1: four streams are faster on this host;
//                                   "default" is what a process here reads, MOE_ONE_TOKEN_STREAMS
//                                   or the CPU's)
//   error[storage]                  the layer output against f32 weights: 32 tokens, each through
//                                   8 random experts combined with softmax weights; worst and
//                                   median per-token relative L2, and max |Δ| ÷ max |y|
//
// Clocks (--clock): `wall` (default) times every thread the kernel uses; on a host crowded with
// other work, whose scheduler takes the cores away mid-pass (more at the kernel's phase barriers
// than in a plain read), wall time measures the crowd. `thread_cpu` runs on the calling thread
// alone (--kernel_threads=1 is implied) and times it with CLOCK_THREAD_CPUTIME_ID, which stops
// while the thread is descheduled and keeps running while it stalls on memory: one core's rates,
// free of preemption, for kernel and read passes alike.
//
//   build/bench/moe_decode_bench [--shape=olmoe|qwen3] [--rounds=7] [--tokens=1,2,4,8]
//                                [--kernel_threads=N] [--clock=wall|thread_cpu]
//
// --tokens: the token counts M (1 to 64; 1 is always measured). M is the tokens each expert
// computes at once, so it also stands for a batch of concurrent one-token requests: the router's
// batch of 32 on a top-8-of-64 layer gives each of ~63 experts 1-10 tokens, ~4 on average.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "bench/bench_experts.h"
#include "common/cli/parse_flags.h"
#include "common/kernels/row_dot_kernel.h"
#include "common/kernels/swiglu_ffn.h"

namespace moe::bench {
namespace {

// A real layer shape (--shape): OLMoE-1B-7B's or Qwen3-30B-A3B's MoE block.
struct Shape {
  const char* name;
  int64_t d_model, width, experts, top_k;
};
constexpr Shape kShapes[] = {{"olmoe", 2048, 1024, 64, 8}, {"qwen3", 2048, 768, 128, 8}};
// The shape measured and the clock: set once in main from --shape and --clock.
Shape layer = kShapes[0];
bool thread_cpu_clock = false;

double Now() {
  if (thread_cpu_clock) {
    timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double Seconds(const std::function<void()>& fn) {
  const double start = Now();
  fn();
  return Now() - start;
}
// Token counts M measured (--tokens); 1 always among them (int8 ÷ bf16 and the streams need it).
std::vector<int64_t> token_counts = {1, 2, 4, 8};
constexpr int64_t kMaxTokens = 64;
constexpr WeightStorage kStorages[] = {WeightStorage::kF32, WeightStorage::kBF16,
                                       WeightStorage::kInt8};

const char* Name(WeightStorage s) {
  return s == WeightStorage::kF32 ? "f32" : s == WeightStorage::kBF16 ? "bf16" : "int8";
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Gaussian values (Box-Muller on a 64-bit LCG: <random> is too slow for 400 M weights).
class Gaussian {
 public:
  explicit Gaussian(uint64_t seed) : s_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  float Next() {
    const double u1 = (static_cast<double>(Bits() >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
    const double u2 = static_cast<double>(Bits() >> 11) * 0x1.0p-53;
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }

 private:
  uint64_t Bits() { return s_ = s_ * 6364136223846793005ull + 1442695040888963407ull; }
  uint64_t s_;
};

Matrix GaussianMatrix(int64_t rows, int64_t cols, float stddev, uint64_t seed) {
  Gaussian g(seed);
  Matrix m(rows, cols);
  for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = stddev * g.Next();
  return m;
}

// experts[storage][e]; every storage made from the same f32 weights.
std::map<WeightStorage, std::vector<SwigluWeights>> MakeExperts() {
  std::map<WeightStorage, std::vector<SwigluWeights>> experts;
  for (int64_t e = 0; e < layer.experts; ++e) {
    const Matrix gate = GaussianMatrix(layer.width, layer.d_model,
                                       1 / std::sqrt(static_cast<float>(layer.d_model)), 3 * e + 1);
    const Matrix up = GaussianMatrix(layer.width, layer.d_model,
                                     1 / std::sqrt(static_cast<float>(layer.d_model)), 3 * e + 2);
    const Matrix down = GaussianMatrix(layer.d_model, layer.width,
                                       1 / std::sqrt(static_cast<float>(layer.width)), 3 * e + 3);
    for (WeightStorage s : kStorages) {
      auto w = SwigluWeights::FromF32(gate, up, down, s);
      if (!w.ok()) {
        std::cerr << w.status() << std::endl;
        std::abort();
      }
      experts[s].push_back(*std::move(w));
    }
  }
  return experts;
}

// Read bandwidth over a 1 GB buffer (SetBandwidthBytes in main) on this bench's clock: the best of
// a summing pass of each of kSumReads and a row-dot pass. Not OpenBLAS's sgemv: with it in the
// bracket, the first round's one-token passes ran slower (a Zen 5, fp32 at 1 token 0.47-0.53 of
// bandwidth against 0.69 in the median of two rounds), even with its threads let sleep first.
double ReadBandwidth() {
  double best = Seconds([] { ReadBufferByRowDots(); });
  for (const SumReads& reads : kSumReads) {
    best = std::min(best, Seconds([&] { ReadBufferBySum(reads); }));
  }
  return static_cast<double>(BandwidthBytes()) / best;
}

// Seconds per decode step of M = x.rows() tokens: one pass of steps over all the experts, the
// one-token dots reading `one_token_streams` weight streams per thread (0: the process's).
double StepSeconds(const std::vector<SwigluWeights>& experts, const Matrix& x,
                   int one_token_streams = 0) {
  Matrix y(x.rows(), layer.d_model);
  SwigluOptions options = PoolOptions();
  options.one_token_streams = one_token_streams;
  const double seconds = Seconds([&] {
    for (int64_t e = 0; e < layer.experts; ++e) {
      if (!SwigluForward(experts[e], x, y.view(), options).ok()) std::abort();
    }
  });
  return seconds / (layer.experts / layer.top_k);
}

// The layer output of `tokens` tokens, each through 8 random experts with softmax weights, per
// storage; then each storage's error against f32.
std::string ErrorJson(const std::map<WeightStorage, std::vector<SwigluWeights>>& experts) {
  constexpr int64_t kTokens = 32;
  const Matrix x = GaussianMatrix(kTokens, layer.d_model, 1.0f, 777);
  std::map<WeightStorage, Matrix> out;
  for (WeightStorage s : kStorages) out.emplace(s, Matrix(kTokens, layer.d_model));
  Gaussian g(4242);
  Matrix y(1, layer.d_model);
  for (int64_t t = 0; t < kTokens; ++t) {
    std::vector<int64_t> chosen;
    while (static_cast<int64_t>(chosen.size()) < layer.top_k) {
      const int64_t e = static_cast<int64_t>(std::abs(g.Next()) * 1e6) % layer.experts;
      if (std::find(chosen.begin(), chosen.end(), e) == chosen.end()) chosen.push_back(e);
    }
    std::vector<double> w(layer.top_k);
    double total = 0;
    for (double& v : w) total += v = std::exp(g.Next());
    for (WeightStorage s : kStorages) {
      for (int64_t j = 0; j < layer.top_k; ++j) {
        const ConstMatrixView row{x.row(t), 1, layer.d_model};
        if (!SwigluForward(experts.at(s)[chosen[j]], row, y.view(), PoolOptions()).ok()) {
          std::abort();
        }
        for (int64_t i = 0; i < layer.d_model; ++i) {
          out.at(s).row(t)[i] += static_cast<float>(w[j] / total) * y.row(0)[i];
        }
      }
    }
  }
  std::vector<std::string> parts;
  const Matrix& ref = out.at(WeightStorage::kF32);
  for (WeightStorage s : {WeightStorage::kBF16, WeightStorage::kInt8}) {
    std::vector<double> rel;
    double max_abs = 0, max_ref = 0;
    for (int64_t t = 0; t < kTokens; ++t) {
      double err2 = 0, norm2 = 0;
      for (int64_t i = 0; i < layer.d_model; ++i) {
        const double e = out.at(s).row(t)[i] - ref.row(t)[i];
        err2 += e * e;
        norm2 += static_cast<double>(ref.row(t)[i]) * ref.row(t)[i];
        max_abs = std::max(max_abs, std::abs(e));
        max_ref = std::max(max_ref, std::abs(static_cast<double>(ref.row(t)[i])));
      }
      rel.push_back(std::sqrt(err2 / norm2));
    }
    parts.push_back(
        absl::StrFormat(R"("%s": {"relative_l2_median": %.2e, "relative_l2_worst_token": %.2e, )"
                        R"("max_abs": %.2e, "max_abs_over_max_output": %.2e})",
                        Name(s), Median(rel), *std::max_element(rel.begin(), rel.end()), max_abs,
                        max_abs / max_ref));
  }
  return absl::StrCat("{", absl::StrJoin(parts, ", "), "}");
}

int Run(int rounds) {
  const int threads = Threads();
  std::cerr << "moe_decode_bench: " << layer.name << ", d_model " << layer.d_model << ", "
            << layer.experts << " experts of width " << layer.width << ", top-" << layer.top_k
            << ", " << threads << " threads; making weights" << std::endl;
  const std::map<WeightStorage, std::vector<SwigluWeights>> experts = MakeExperts();
  std::map<WeightStorage, double> layer_bytes;
  for (WeightStorage s : kStorages) {
    for (const SwigluWeights& w : experts.at(s)) layer_bytes[s] += static_cast<double>(w.bytes());
  }
  std::map<int64_t, Matrix> tokens;
  for (int64_t m : token_counts) tokens.emplace(m, GaussianMatrix(m, layer.d_model, 1.0f, 100 + m));

  std::vector<double> bandwidth, int8_vs_bf16;
  std::map<WeightStorage, std::map<int64_t, std::vector<double>>> rate, fraction, streams_rate;
  std::map<WeightStorage, std::vector<double>> first_pass_fraction;
  std::map<WeightStorage, std::vector<double>> four_vs_one;
  ReadBufferBySum();  // untimed: the first pass allocates and faults in the read buffer
  for (int r = 0; r < rounds; ++r) {
    std::cerr << "round " << r + 1 << "/" << rounds << std::endl;
    for (int64_t m : token_counts) {
      std::map<WeightStorage, double> seconds;
      for (WeightStorage s : kStorages) {
        // The machine's bandwidth drifts within seconds (a shared host): bracket each pass.
        const double before = ReadBandwidth();
        const double first_pass = StepSeconds(experts.at(s), tokens.at(m));
        seconds[s] = StepSeconds(experts.at(s), tokens.at(m));
        const double bw = (before + ReadBandwidth()) / 2;
        bandwidth.push_back(bw);
        const double step_bytes = layer_bytes[s] / (layer.experts / layer.top_k);
        rate[s][m].push_back(m / seconds[s]);
        fraction[s][m].push_back(step_bytes / seconds[s] / bw);
        if (m == 1) first_pass_fraction[s].push_back(step_bytes / first_pass / bw);
      }
      if (m == 1)
        int8_vs_bf16.push_back(seconds[WeightStorage::kBF16] / seconds[WeightStorage::kInt8]);
    }
    // One token with 1 and 4 weight streams per thread in turn, two passes each, the order
    // flipping every round: whatever the host's rate does meanwhile falls on both alike.
    for (WeightStorage s : kStorages) {
      double seconds[2] = {0, 0};  // [kOneTokenStreamChoices[i]]
      for (int pass = 0; pass < 4; ++pass) {
        const int i = (pass + r) % 2;
        seconds[i] += StepSeconds(experts.at(s), tokens.at(1), kOneTokenStreamChoices[i]);
      }
      for (int i = 0; i < 2; ++i)
        streams_rate[s][kOneTokenStreamChoices[i]].push_back(2 / seconds[i]);
      four_vs_one[s].push_back(seconds[0] / seconds[1]);
    }
  }
  std::cerr << "output error" << std::endl;
  const std::string error = ErrorJson(experts);

  auto per_m = [](const std::map<int64_t, std::vector<double>>& v, int decimals) {
    std::vector<std::string> parts;
    for (const auto& [m, xs] : v) {
      parts.push_back(absl::StrCat("\"", m, "\": ", absl::StrFormat("%.*f", decimals, Median(xs))));
    }
    return absl::StrCat("{", absl::StrJoin(parts, ", "), "}");
  };
  auto per_storage = [&](const std::map<WeightStorage, std::map<int64_t, std::vector<double>>>& v,
                         int decimals) {
    std::vector<std::string> parts;
    for (WeightStorage s : kStorages) {
      parts.push_back(absl::StrCat("\"", Name(s), "\": ", per_m(v.at(s), decimals)));
    }
    return absl::StrCat("{", absl::StrJoin(parts, ", "), "}");
  };
  std::vector<std::string> streams_parts, first_pass_parts;
  for (WeightStorage s : kStorages) {
    first_pass_parts.push_back(
        absl::StrFormat(R"("%s": %.3f)", Name(s), Median(first_pass_fraction.at(s))));
    streams_parts.push_back(absl::StrFormat(R"("%s": {"tokens_per_s": %s, "four_vs_one": %.3f})",
                                            Name(s), per_m(streams_rate.at(s), 1),
                                            Median(four_vs_one.at(s))));
  }
  const std::string streams_json =
      absl::StrCat(R"({"default": )", OneTokenStreamsFromEnv().value_or(0), ", ",
                   absl::StrJoin(streams_parts, ", "), "}");
  const double int8_ratio = Median(int8_vs_bf16);
  std::printf(
      R"({"shape": "%s", "d_model": %d, "experts": %d, "width": %d, "top_k": %d, )"
      R"("int8_vs_bf16_one_token": {"value": %.3f, "target": 1.80, "met": %s}, )"
      R"("threads": %d, "clock": "%s", "rounds": %d, "kernels": "%s", "int8_kernels": "%s", )"
      R"("layer_bytes": {"f32": %.0f, )"
      R"("bf16": %.0f, "int8": %.0f}, "read_bandwidth_GBps": %.2f, )"
      R"("read_bandwidth_GBps_min_max": [%.2f, %.2f], "tokens_per_s": %s, )"
      R"("bandwidth_fraction": %s, "first_pass_fraction": {%s}, "one_token_streams": %s, )"
      R"("error_vs_f32": %s})"
      "\n",
      layer.name, static_cast<int>(layer.d_model), static_cast<int>(layer.experts),
      static_cast<int>(layer.width), static_cast<int>(layer.top_k), int8_ratio,
      int8_ratio >= 1.8 ? "true" : "false", threads, thread_cpu_clock ? "thread_cpu" : "wall",
      rounds, SwigluKernelSummary(WeightStorage::kF32).value_or("MOE_KERNELS is invalid").c_str(),
      SwigluKernelSummary(WeightStorage::kInt8).value_or("MOE_KERNELS is invalid").c_str(),
      layer_bytes[WeightStorage::kF32], layer_bytes[WeightStorage::kBF16],
      layer_bytes[WeightStorage::kInt8], Median(bandwidth) / 1e9,
      *std::min_element(bandwidth.begin(), bandwidth.end()) / 1e9,
      *std::max_element(bandwidth.begin(), bandwidth.end()) / 1e9, per_storage(rate, 1).c_str(),
      per_storage(fraction, 3).c_str(), absl::StrJoin(first_pass_parts, ", ").c_str(),
      streams_json.c_str(), error.c_str());
  return 0;
}

}  // namespace
}  // namespace moe::bench

constexpr char kUsage[] =
    "usage: moe_decode_bench [--shape=olmoe|qwen3] [--rounds=N] [--tokens=M[,M...]] "
    "[--kernel_threads=N] [--clock=wall|thread_cpu]";

int main(int argc, char** argv) {
  if (moe::AsksForHelp(argc, argv)) {
    std::cout << kUsage << std::endl;
    return 0;
  }
  int rounds = 7, threads = 0;  // threads 0: one per core
  std::string shape = "olmoe";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--shape=", 0) == 0) {
      shape = arg.substr(8);
    } else if (arg.rfind("--rounds=", 0) == 0) {
      rounds = std::max(1, std::atoi(arg.c_str() + 9));
    } else if (arg.rfind("--tokens=", 0) == 0) {
      std::set<int64_t> counts = {1};
      for (absl::string_view part : absl::StrSplit(arg.substr(9), ',')) {
        int64_t m = 0;
        if (!absl::SimpleAtoi(part, &m) || m < 1 || m > moe::bench::kMaxTokens) {
          std::cerr << "moe_decode_bench: --tokens takes token counts from 1 to "
                    << moe::bench::kMaxTokens << " separated by commas, got \"" << part << "\""
                    << std::endl;
          return 2;
        }
        counts.insert(m);
      }
      moe::bench::token_counts.assign(counts.begin(), counts.end());
    } else if (arg.rfind("--kernel_threads=", 0) == 0) {
      threads = std::atoi(arg.c_str() + 17);
    } else if (arg == "--clock=thread_cpu") {
      moe::bench::thread_cpu_clock = true;
    } else if (arg == "--clock=wall") {
      moe::bench::thread_cpu_clock = false;
    } else {
      std::cerr << "moe_decode_bench: unknown argument " << arg << "\n" << kUsage << std::endl;
      return 2;
    }
  }
  bool known = false;
  for (const moe::bench::Shape& s : moe::bench::kShapes) {
    if (shape != s.name) continue;
    known = true;
    moe::bench::layer = s;
  }
  if (!known) {
    std::cerr << "moe_decode_bench: --shape must be olmoe or qwen3, got " << shape << std::endl;
    return 2;
  }
  moe::bench::InitThreads(moe::bench::thread_cpu_clock ? 1 : threads);
  moe::bench::SetBandwidthBytes(int64_t{1} << 30);
  return moe::bench::Run(rounds);
}
