// moe_roofline: the machine's two ceilings for an expert FFN shape, measured now, as one JSON line:
// streaming read bandwidth (MeasureReadBandwidth: the best of summing passes reading 1, 2, 4 and 8
// streams per task, with and without software prefetch, and a row-dot pass, over a buffer larger
// than the last-level cache, on a
// kernel pool of --threads) and OpenBLAS sgemm FLOP/s on the FFN's
// three shapes (x·gateᵀ, x·upᵀ, act·downᵀ at --tokens rows; 6·M·d·h flops), with --threads BLAS
// threads. scripts/bench divides the served layer's figures by these.
//
// It also says which kernels ran: OpenBLAS's core (after UseBestBlasKernels, or as the library
// picked it alone with --blas_kernels=as_loaded: the before/after sgemm comparison) and the
// project's row-dot kernel set.
//
//   moe_roofline [--d_model=2048] [--width=1024] [--tokens=256] [--threads=0] [--rounds=5]
//                [--buffer_mb=1024] [--blas_kernels=best|as_loaded] [--report_only]
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "bench/bench_experts.h"
#include "common/cli/parse_flags.h"
#include "common/kernels/blas_kernels.h"
#include "common/kernels/row_dot_kernel.h"

namespace moe::bench {
namespace {

struct Flags {
  int64_t d_model = 2048, width = 1024, tokens = 256, buffer_mb = 1024;
  int threads = 0, rounds = 5;
  bool best_blas = true, report_only = false;
};

constexpr char kUsage[] =
    "usage: moe_roofline [--d_model=N] [--width=N] [--tokens=N] [--threads=N] [--rounds=N] "
    "[--buffer_mb=N] [--blas_kernels=best|as_loaded] [--report_only]";

bool Parse(int argc, char** argv, Flags* flags) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* name, int64_t* out) {
      const std::string prefix = std::string("--") + name + "=";
      if (arg.rfind(prefix, 0) != 0) return false;
      *out = std::atoll(arg.c_str() + prefix.size());
      return true;
    };
    int64_t threads = flags->threads, rounds = flags->rounds;
    if (value("d_model", &flags->d_model) || value("width", &flags->width) ||
        value("tokens", &flags->tokens) || value("buffer_mb", &flags->buffer_mb)) {
      continue;
    }
    if (value("threads", &threads)) {
      flags->threads = static_cast<int>(threads);
    } else if (value("rounds", &rounds)) {
      flags->rounds = static_cast<int>(rounds);
    } else if (arg == "--blas_kernels=best" || arg == "--blas_kernels=as_loaded") {
      flags->best_blas = arg == "--blas_kernels=best";
    } else if (arg == "--report_only") {
      flags->report_only = true;
    } else {
      std::cerr << "moe_roofline: unknown argument " << arg << "\n" << kUsage << std::endl;
      return false;
    }
  }
  if (flags->d_model < 1 || flags->width < 1 || flags->tokens < 1 || flags->rounds < 1) {
    std::cerr << "moe_roofline: --d_model, --width, --tokens and --rounds must be >= 1"
              << std::endl;
    return false;
  }
  return true;
}

Matrix Filled(int64_t rows, int64_t cols, uint64_t seed) {
  Matrix m(rows, cols);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int64_t i = 0; i < m.size(); ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    m.data()[i] = static_cast<float>(s >> 40) * (2.0f / 16777216.0f) - 1.0f;
  }
  return m;
}

// FLOP/s of plain sgemm on the FFN's shapes, rotating over 4 experts' weights.
double SgemmFlops(const Flags& f) {
  constexpr int kExpertsRotated = 4;
  std::vector<Matrix> gate, up, down;
  for (int e = 0; e < kExpertsRotated; ++e) {
    gate.push_back(Filled(f.width, f.d_model, 3 * e + 1));
    up.push_back(Filled(f.width, f.d_model, 3 * e + 2));
    down.push_back(Filled(f.d_model, f.width, 3 * e + 3));
  }
  const Matrix x = Filled(f.tokens, f.d_model, 99);
  Matrix g(f.tokens, f.width), u(f.tokens, f.width), y(f.tokens, f.d_model);
  const double seconds = MedianSeconds(
      [&](int call) {
        const int e = call % kExpertsRotated;
        if (!MatMulTransposed(x, gate[e], g.view()).ok() ||
            !MatMulTransposed(x, up[e], u.view()).ok() ||
            !MatMulTransposed(g, down[e], y.view()).ok()) {
          std::abort();
        }
      },
      kExpertsRotated, f.rounds);
  return 6.0 * f.tokens * f.d_model * f.width / seconds;
}

int Run(const Flags& f) {
  const std::string kernels = std::string("\"openblas_core\": \"") + BlasCoreName() +
                              "\", \"blas_kernels\": \"" + BlasKernelsReport() +
                              "\", \"row_dot_kernels\": \"" + BestRowDotKernels().name + "\"";
  if (f.report_only) {
    std::printf("{%s}\n", kernels.c_str());
    return 0;
  }
  InitThreads(f.threads);
  SetBandwidthBytes(f.buffer_mb << 20);
  const double bandwidth = MeasureReadBandwidth(f.rounds);
  const double sgemm = SgemmFlops(f);
  std::printf(
      "{%s, \"threads\": %d, \"d_model\": %lld, \"width\": %lld, \"tokens\": %lld, "
      "\"buffer_mb\": %lld, \"read_bandwidth_GBps\": %.2f, \"sgemm_GFLOPps\": %.2f}\n",
      kernels.c_str(), Threads(), static_cast<long long>(f.d_model),
      static_cast<long long>(f.width), static_cast<long long>(f.tokens),
      static_cast<long long>(BandwidthBytes() >> 20), bandwidth / 1e9, sgemm / 1e9);
  return 0;
}

}  // namespace
}  // namespace moe::bench

int main(int argc, char** argv) {
  moe::bench::Flags flags;
  if (moe::AsksForHelp(argc, argv)) {
    std::cout << moe::bench::kUsage << std::endl;
    return 0;
  }
  if (!moe::bench::Parse(argc, argv, &flags)) return 2;
  if (flags.best_blas) moe::UseBestBlasKernels(argv);
  return moe::bench::Run(flags);
}
