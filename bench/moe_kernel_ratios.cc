// moe_kernel_ratios: the kernel ratios of DESIGN.md §8 measured in one run, printed as one JSON
// object on stdout (progress on stderr). Every ratio is paired: numerator and denominator are
// measured in the same round, back to back, and the median over rounds is reported, so a burst of
// other work on the machine skews a round, not the result.
//
//   small_batch_bandwidth_fraction  median over M = 1..8 of (FFN weight bytes/s, F32 storage,
//                                   auto path) ÷ streaming read bandwidth (the better of a summing
//                                   pass and a matrix-vector pass over 256 MB, same threads),
//                                   measured right before and after each FFN measurement;
//                                   OpenBLAS sgemv over the same 256 MB is reported alongside
//   large_batch_sgemm_fraction      min over M ∈ {128, 256} of FFN FLOP/s ÷ plain OpenBLAS sgemm
//                                   FLOP/s on the same three shapes (6·M·d·h flops)
//   bf16_vs_fp32_one_token          tokens/s with BF16 storage ÷ with F32 storage, M = 1
//   switch point                    per storage, the smallest swept M from which BLAS beats the
//                                   streaming kernel at every larger swept M (null: never), next
//                                   to the one compiled in for this CPU and OpenBLAS core
//
//   build-kernels/bench/moe_kernel_ratios [--rounds=9] [--sweep_rounds=3]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/bench_experts.h"
#include "common/cli/parse_flags.h"
#include "common/kernels/blas_kernels.h"
#include "common/kernels/swiglu_ffn.h"

namespace moe::bench {
namespace {

constexpr int64_t kSweep[] = {1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256};
constexpr int64_t kLarge[] = {128, 256};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0 : (n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2);
}

// Seconds per FFN call, rotating over the 8 experts (one call each, after one warm-up call).
double FfnSeconds(WeightStorage storage, SwigluPath path, const Matrix& x) {
  const std::vector<SwigluWeights>& experts = Experts(storage);
  Matrix y(x.rows(), kDModel);
  const SwigluOptions options = PoolOptions(path);
  return MedianSeconds(
      [&](int call) {
        if (!SwigluForward(experts[call % kExperts], x, y.view(), options).ok()) std::abort();
      },
      kExperts, 1);
}

double SgemmSeconds(const Matrix& x) {
  return MedianSeconds([&](int call) { PlainSgemm(call, x, /*stacked=*/false); }, kExperts, 1);
}

// OpenBLAS's worker threads keep spinning for 2^28 TSC ticks (~0.1 s here) after each call and
// take a core from whatever runs next; measured, that halves the streaming kernel's speed. So
// every measurement that does not use BLAS waits this out first.
void LetBlasThreadsSleep() { std::this_thread::sleep_for(std::chrono::milliseconds(150)); }

// Streaming read bandwidth (MeasureReadBandwidth) over 256 MB, on the kernel pool.
double ReferenceBandwidth() { return MeasureReadBandwidth(1); }

std::string Target(double value, double target) {
  return absl::StrFormat(R"({"value": %.3f, "target": %.2f, "met": %s})", value, target,
                         value >= target ? "true" : "false");
}

std::string PerM(const std::map<int64_t, double>& values, double scale) {
  std::vector<std::string> parts;
  for (const auto& [m, v] : values) parts.push_back(absl::StrFormat(R"("%d": %.2f)", m, v * scale));
  return absl::StrCat("{", absl::StrJoin(parts, ", "), "}");
}

int Run(int rounds, int sweep_rounds) {
  InitThreads(0);  // one per core, kernel pool and OpenBLAS alike
  const int threads = Threads();
  std::cerr << "moe_kernel_ratios: d_model " << kDModel << ", width " << kWidth << ", " << kExperts
            << " experts per storage, " << threads << " threads; setting up" << std::endl;
  Experts(WeightStorage::kF32);
  Experts(WeightStorage::kBF16);
  std::map<int64_t, Matrix> tokens;
  for (int64_t m : kSweep) tokens.emplace(m, Tokens(m));
  for (int64_t m = 1; m <= 8; ++m) tokens.emplace(m, Tokens(m));
  for (int64_t m : kLarge) tokens.emplace(m, Tokens(m));
  const double f32_bytes = static_cast<double>(Experts(WeightStorage::kF32)[0].bytes());
  const double bf16_bytes = static_cast<double>(Experts(WeightStorage::kBF16)[0].bytes());
  auto flops = [](int64_t m) { return 6.0 * m * kDModel * kWidth; };

  std::vector<double> bandwidth, sgemv, bf16_vs_f32;
  std::map<int64_t, std::vector<double>> small_f32, small_bf16, small_fraction, large_ffn,
      large_sgemm, large_fraction;
  for (int r = 0; r < rounds; ++r) {
    std::cerr << "round " << r + 1 << "/" << rounds << std::endl;
    // Non-BLAS measurements first, then the BLAS ones (see LetBlasThreadsSleep).
    LetBlasThreadsSleep();
    for (int64_t m = 1; m <= 8; ++m) {
      // The machine's bandwidth drifts by tens of percent within seconds (a shared host), so each
      // kernel measurement is bracketed by reference passes and divided by their mean.
      const double before = ReferenceBandwidth();
      const double f32 =
          f32_bytes / FfnSeconds(WeightStorage::kF32, SwigluPath::kAuto, tokens.at(m));
      const double bf16 =
          bf16_bytes / FfnSeconds(WeightStorage::kBF16, SwigluPath::kAuto, tokens.at(m));
      const double bw = (before + ReferenceBandwidth()) / 2;
      bandwidth.push_back(bw);
      small_f32[m].push_back(f32);
      small_bf16[m].push_back(bf16);
      small_fraction[m].push_back(f32 / bw);
      // tokens/s ratio = (bytes/s ÷ bytes per call) ratio
      if (m == 1) bf16_vs_f32.push_back((bf16 / bf16_bytes) / (f32 / f32_bytes));
    }
    std::map<int64_t, double> ffn;
    for (int64_t m : kLarge) {
      ffn[m] = flops(m) / FfnSeconds(WeightStorage::kF32, SwigluPath::kAuto, tokens.at(m));
    }
    sgemv.push_back(BandwidthBytes() / MedianSeconds([](int) { ReadBufferBySgemv(); }, 1, 3));
    for (int64_t m : kLarge) {
      const double sgemm = flops(m) / SgemmSeconds(tokens.at(m));
      large_ffn[m].push_back(ffn[m]);
      large_sgemm[m].push_back(sgemm);
      large_fraction[m].push_back(ffn[m] / sgemm);
    }
  }
  // Switch point sweep: both paths, both storages, seconds per call.
  std::map<WeightStorage, std::map<int64_t, std::vector<double>>> streaming, blas;
  for (int r = 0; r < sweep_rounds; ++r) {
    std::cerr << "switch sweep " << r + 1 << "/" << sweep_rounds << std::endl;
    for (WeightStorage storage : {WeightStorage::kF32, WeightStorage::kBF16}) {
      LetBlasThreadsSleep();
      for (int64_t m : kSweep) {
        streaming[storage][m].push_back(FfnSeconds(storage, SwigluPath::kStreaming, tokens.at(m)));
      }
      for (int64_t m : kSweep) {
        blas[storage][m].push_back(FfnSeconds(storage, SwigluPath::kBlas, tokens.at(m)));
      }
    }
  }

  auto medians = [](const std::map<int64_t, std::vector<double>>& v) {
    std::map<int64_t, double> out;
    for (const auto& [m, xs] : v) out[m] = Median(xs);
    return out;
  };
  std::vector<double> fractions;
  for (const auto& [m, f] : medians(small_fraction)) fractions.push_back(f);
  double large = 1e9;
  for (const auto& [m, f] : medians(large_fraction)) large = std::min(large, f);

  std::string switch_json;
  for (WeightStorage storage : {WeightStorage::kF32, WeightStorage::kBF16}) {
    const std::map<int64_t, double> s = medians(streaming[storage]), b = medians(blas[storage]);
    int64_t measured = -1;  // first swept M from which BLAS wins at every larger swept M
    for (auto it = s.rbegin(); it != s.rend() && b.at(it->first) < it->second; ++it) {
      measured = it->first;
    }
    const int64_t compiled = SwigluBlasMinTokens(storage);
    switch_json += absl::StrFormat(
        R"(, "switch_point_%s": {"measured_blas_from_m": %s, "compiled_blas_min_tokens": %s, )"
        R"("streaming_ms": %s, "blas_ms": %s})",
        storage == WeightStorage::kF32 ? "f32" : "bf16",
        measured < 0 ? "null" : absl::StrCat(measured),
        compiled == kSwigluNeverBlas ? "null" : absl::StrCat(compiled), PerM(s, 1e3), PerM(b, 1e3));
  }

  std::printf(
      R"({"small_batch_bandwidth_fraction": %s, "large_batch_sgemm_fraction": %s, )"
      R"("bf16_vs_fp32_one_token": %s, "threads": %d, "rounds": %d, "openblas_core": "%s", )"
      R"("read_bandwidth_GBps": %.2f, "read_bandwidth_GBps_min_max": [%.2f, %.2f], )"
      R"("openblas_sgemv_GBps": %.2f, "kernel_f32_GBps": %s, )"
      R"("kernel_bf16_GBps": %s, )"
      R"("kernel_f32_GFLOPps": %s, "sgemm_GFLOPps": %s, "large_fraction_per_m": %s%s})"
      "\n",
      Target(Median(fractions), 0.75).c_str(), Target(large, 0.85).c_str(),
      Target(Median(bf16_vs_f32), 1.6).c_str(), threads, rounds, BlasCoreName().c_str(),
      Median(bandwidth) / 1e9, *std::min_element(bandwidth.begin(), bandwidth.end()) / 1e9,
      *std::max_element(bandwidth.begin(), bandwidth.end()) / 1e9, Median(sgemv) / 1e9,
      PerM(medians(small_f32), 1e-9).c_str(), PerM(medians(small_bf16), 1e-9).c_str(),
      PerM(medians(large_ffn), 1e-9).c_str(), PerM(medians(large_sgemm), 1e-9).c_str(),
      PerM(medians(large_fraction), 1).c_str(), switch_json.c_str());
  return 0;
}

}  // namespace
}  // namespace moe::bench

constexpr char kUsage[] = "usage: moe_kernel_ratios [--rounds=N] [--sweep_rounds=N]";

int main(int argc, char** argv) {
  if (moe::AsksForHelp(argc, argv)) {
    std::cout << kUsage << std::endl;
    return 0;
  }
  moe::UseBestBlasKernels(argv);
  int rounds = 9, sweep_rounds = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--rounds=", 0) == 0) {
      rounds = std::max(1, std::atoi(arg.c_str() + 9));
    } else if (arg.rfind("--sweep_rounds=", 0) == 0) {
      sweep_rounds = std::max(1, std::atoi(arg.c_str() + 15));
    } else {
      std::cerr << "moe_kernel_ratios: unknown argument " << arg << "\n" << kUsage << std::endl;
      return 2;
    }
  }
  return moe::bench::Run(rounds, sweep_rounds);
}
