// moe_layer_kernels_bench: the expert FFNs of one MoE layer call on a bench or real layer shape,
// per kernel choice, in one run. A call of T tokens with top-k routing over E experts runs
// SwigluForward once per expert on T·k/E tokens (routing spread evenly; the gather is not timed),
// one expert after the other on the shared kernel pool, as a shard computes them. Variants:
//   fp32           F32 weights, the automatic path (today's float32)
//   fp32_sgemm     F32 weights, OpenBLAS sgemm forced
//   bf16_f32act    BF16 weights, float32 activations (the path before the bf16-activation kernels)
//   bf16_avx512bf16  BF16 weights, the AVX512-BF16 dots (no AMX) from their min_tokens per call,
//                  also on CPUs where the automatic path leaves them (Avx512Bf16DotsPayOff); only
//                  on CPUs with AVX512-BF16
//   bf16           BF16 weights, the automatic path (bf16 activations from SwigluBf16DotMinTokens()
//                  tokens per expert where the CPU has AVX512-BF16; AMX tiles where it has AMX)
// Each round runs every variant once, back to back, in an order that rotates from round to round;
// reported are the median tokens/s over rounds and the median over rounds of each variant's ratio
// to fp32 in the same round (use a multiple of 4 rounds so each variant leads equally often).
//
//   build/bench/moe_layer_kernels_bench --shape=olmoe [--tokens=16,64,256] [--rounds=8]
//       [--kernel_threads=N] [--clock=wall|cpu]
// --clock=cpu times by the process's CPU time instead of wall time and needs --kernel_threads=1
// (helpers spin while they wait, which CPU time would count): on a machine shared with other work,
// one thread's CPU time shows what the kernels do per core while wall time shows what a caller
// got.
// Shapes: bench (d 1024, 8 experts × 2816, top-2), olmoe (d 2048, 64 × 1024, top-8: 1.6 GB fp32),
// qwen3 (d 2048, 128 × 768, top-8: 2.4 GB fp32). MOE_KERNELS caps the kernels as in a shard.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/bench_experts.h"
#include "common/cli/parse_flags.h"
#include "common/kernels/bf16_dot_kernel.h"
#include "common/kernels/blas_kernels.h"
#include "common/kernels/swiglu_ffn.h"

namespace moe::bench {
namespace {

struct Shape {
  std::string name;
  int64_t d_model, width;
  int experts, top_k;
};

const Shape kShapes[] = {
    {"bench", 1024, 2816, 8, 2},
    {"olmoe", 2048, 1024, 64, 8},
    {"qwen3", 2048, 768, 128, 8},
};

struct Variant {
  const char* name;
  bool bf16;
  SwigluOptions options;
  bool avx512bf16_dots = false;  // kBf16Dot for calls of Avx512Bf16DotKernels()->min_tokens+
};

std::vector<Variant> Variants() {
  Variant fp32{"fp32", false, PoolOptions()};
  Variant sgemm{"fp32_sgemm", false, PoolOptions(SwigluPath::kBlas)};
  Variant bf16_f32act{"bf16_f32act", true, PoolOptions()};
  bf16_f32act.options.allow_avx512_bf16 = false;
  Variant bf16_no_amx{"bf16_avx512bf16", true, PoolOptions()};
  bf16_no_amx.options.allow_amx = false;
  bf16_no_amx.avx512bf16_dots = true;
  Variant bf16{"bf16", true, PoolOptions()};
  if (Avx512Bf16DotKernels() == nullptr) return {fp32, sgemm, bf16_f32act, bf16};
  return {fp32, sgemm, bf16_f32act, bf16_no_amx, bf16};
}

double Now(bool cpu_clock) {
  if (cpu_clock) {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int Run(const Shape& shape, const std::vector<int64_t>& token_counts, int rounds, bool cpu_clock) {
  std::cerr << "building " << shape.experts << " experts of " << shape.name << " ..." << std::endl;
  std::vector<SwigluWeights> f32, bf16;
  const float scale_in = 1.0f / std::sqrt(static_cast<float>(shape.d_model));
  const float scale_hidden = 1.0f / std::sqrt(static_cast<float>(shape.width));
  for (int e = 0; e < shape.experts; ++e) {
    Matrix gate = Filled(shape.width, shape.d_model, scale_in, 3 * e + 1);
    Matrix up = Filled(shape.width, shape.d_model, scale_in, 3 * e + 2);
    Matrix down = Filled(shape.d_model, shape.width, scale_hidden, 3 * e + 3);
    auto b = SwigluWeights::FromF32(gate, up, down, WeightStorage::kBF16);
    auto f = SwigluWeights::FromF32(std::move(gate), std::move(up), std::move(down));
    if (!b.ok() || !f.ok()) return 1;
    bf16.push_back(*std::move(b));
    f32.push_back(*std::move(f));
  }
  const std::vector<Variant> variants = Variants();
  std::printf(
      "shape %s: d_model %lld, %d experts x %lld, top-%d; %d threads, OpenBLAS %s, %s time\n",
      shape.name.c_str(), static_cast<long long>(shape.d_model), shape.experts,
      static_cast<long long>(shape.width), shape.top_k, Threads(), BlasCoreName().c_str(),
      cpu_clock ? "CPU" : "wall");
  std::printf("| tokens | per expert |");
  for (const Variant& v : variants) std::printf(" %s tok/s |", v.name);
  for (size_t i = 1; i < variants.size(); ++i) std::printf(" %s ÷ fp32 |", variants[i].name);
  std::printf(" bf16 kernels |\n|---|---|");
  for (size_t i = 0; i < 2 * variants.size(); ++i) std::printf("---|");
  std::printf("\n");
  for (int64_t tokens : token_counts) {
    // Pairs (token, expert) spread evenly: expert e gets base or base + 1 tokens.
    const int64_t pairs = tokens * shape.top_k;
    std::vector<Matrix> x, y;
    for (int e = 0; e < shape.experts; ++e) {
      const int64_t n = pairs / shape.experts + (e < pairs % shape.experts ? 1 : 0);
      x.push_back(Filled(n, shape.d_model, 1.0f, 1000 + e));
      y.emplace_back(n, shape.d_model);
    }
    std::vector<std::vector<double>> seconds(variants.size()), ratios(variants.size());
    SwigluReport report;
    for (int r = 0; r <= rounds; ++r) {  // round 0 warms up
      std::vector<double> round(variants.size());
      // The order rotates from round to round: whichever variant runs first after another one
      // finds the caches and prefetchers in a different state (measured: up to 25% apart).
      for (size_t i = 0; i < variants.size(); ++i) {
        const size_t v = (i + static_cast<size_t>(r)) % variants.size();
        const std::vector<SwigluWeights>& experts = variants[v].bf16 ? bf16 : f32;
        SwigluOptions options = variants[v].options;
        const double start = Now(cpu_clock);
        for (int e = 0; e < shape.experts; ++e) {
          if (x[e].rows() == 0) continue;
          options.report = variants[v].bf16 && v + 1 == variants.size() ? &report : nullptr;
          if (variants[v].avx512bf16_dots) {
            options.path = x[e].rows() >= Avx512Bf16DotKernels()->min_tokens ? SwigluPath::kBf16Dot
                                                                             : SwigluPath::kAuto;
          }
          const absl::Status status = SwigluForward(experts[e], x[e], y[e].view(), options);
          if (!status.ok()) {
            std::cerr << variants[v].name << ": " << status << std::endl;
            return 1;
          }
        }
        round[v] = Now(cpu_clock) - start;
      }
      if (r == 0) continue;
      for (size_t v = 0; v < variants.size(); ++v) {
        seconds[v].push_back(round[v]);
        ratios[v].push_back(round[0] / round[v]);
      }
    }
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    std::printf("| %lld | %.1f |", static_cast<long long>(tokens),
                static_cast<double>(pairs) / shape.experts);
    for (size_t v = 0; v < variants.size(); ++v)
      std::printf(" %.0f |", tokens / median(seconds[v]));
    for (size_t v = 1; v < variants.size(); ++v) std::printf(" %.2f |", median(ratios[v]));
    std::printf(" %s |\n", report.kernels);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace
}  // namespace moe::bench

constexpr char kUsage[] =
    "usage: moe_layer_kernels_bench [--shape=bench|olmoe|qwen3] [--tokens=16,64,256] "
    "[--rounds=8] [--kernel_threads=N] [--clock=wall|cpu]";

int main(int argc, char** argv) {
  if (moe::AsksForHelp(argc, argv)) {
    std::cout << kUsage << std::endl;
    return 0;
  }
  std::string shape_name = "bench";
  std::vector<int64_t> tokens = {16, 64, 256};
  int rounds = 8, threads = 0;
  bool cpu_clock = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* flag) -> const char* {
      const std::string prefix = std::string(flag) + "=";
      return arg.rfind(prefix, 0) == 0 ? argv[i] + prefix.size() : nullptr;
    };
    if (const char* v = value("--shape")) {
      shape_name = v;
    } else if (const char* v = value("--tokens")) {
      tokens.clear();
      for (absl::string_view part : absl::StrSplit(v, ',')) {
        int64_t n = 0;
        if (!absl::SimpleAtoi(part, &n) || n < 1) {
          std::cerr << "--tokens: \"" << part << "\" is not a positive integer" << std::endl;
          return 2;
        }
        tokens.push_back(n);
      }
    } else if (const char* v = value("--rounds")) {
      if (!absl::SimpleAtoi(v, &rounds) || rounds < 1) {
        std::cerr << "--rounds: need a positive integer, got \"" << v << "\"" << std::endl;
        return 2;
      }
    } else if (const char* v = value("--clock")) {
      if (std::string(v) != "wall" && std::string(v) != "cpu") {
        std::cerr << "--clock: need wall or cpu, got \"" << v << "\"" << std::endl;
        return 2;
      }
      cpu_clock = std::string(v) == "cpu";
    } else if (const char* v = value("--kernel_threads")) {
      if (!absl::SimpleAtoi(v, &threads)) {
        std::cerr << "--kernel_threads: need an integer, got \"" << v << "\"" << std::endl;
        return 2;
      }
    } else {
      std::cerr << "moe_layer_kernels_bench: unknown argument " << arg << "\n"
                << kUsage << std::endl;
      return 2;
    }
  }
  for (const moe::bench::Shape& shape : moe::bench::kShapes) {
    if (shape.name == shape_name) {
      if (cpu_clock && threads != 1) {
        std::cerr << "--clock=cpu needs --kernel_threads=1 (waiting helpers spin)" << std::endl;
        return 2;
      }
      moe::bench::InitThreads(threads);
      return moe::bench::Run(shape, tokens, rounds, cpu_clock);
    }
  }
  std::cerr << "--shape: \"" << shape_name << "\" is not one of bench, olmoe, qwen3" << std::endl;
  return 2;
}
