// Microbenchmarks of the expert FFN kernels on the bench shape (d_model 1024, width 2816), with
// weights rotating over 8 experts so they stream from DRAM. Rates are per second of wall time:
//   weight_Bps  weight bytes read per second (few tokens: bandwidth bound)
//   flops       6·M·d·h per second (many tokens: compute bound)
//   tokens_ps   tokens per second
// Run e.g.  build-kernels/bench/moe_kernels_bench --benchmark_filter=Switch
// moe_kernel_ratios turns these measurements into the ratios of DESIGN.md §8.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "bench/bench_experts.h"
#include "common/kernels/bf16_dot_kernel.h"
#include "common/kernels/blas_kernels.h"
#include "common/kernels/swiglu_ffn.h"
#include "common/kernels/thread_pool.h"

namespace moe::bench {
namespace {

using benchmark::Counter;

void SetRates(benchmark::State& state, double bytes_per_call, double flops_per_call,
              double tokens_per_call) {
  const double calls = static_cast<double>(state.iterations());
  if (bytes_per_call > 0)
    state.counters["weight_Bps"] = Counter(bytes_per_call * calls, Counter::kIsRate);
  if (flops_per_call > 0)
    state.counters["flops"] = Counter(flops_per_call * calls, Counter::kIsRate);
  if (tokens_per_call > 0) {
    state.counters["tokens_ps"] = Counter(tokens_per_call * calls, Counter::kIsRate);
  }
}

// The storage argument of the benchmarks below: 0 F32, 1 BF16, 2 int8.
WeightStorage StorageArg(int64_t arg) {
  return arg == 0 ? WeightStorage::kF32 : arg == 1 ? WeightStorage::kBF16 : WeightStorage::kInt8;
}

double Flops(int64_t tokens) { return 6.0 * tokens * kDModel * kWidth; }

// Arguments: streams each thread reads at once, and 1 to prefetch in software (kSumReads).
void BM_ReadBandwidthSum(benchmark::State& state) {
  const SumReads reads{static_cast<int>(state.range(0)), state.range(1) == 1};
  ReadBufferBySum(reads);  // untimed: the first pass allocates and faults in the buffer
  for (auto _ : state) ReadBufferBySum(reads);
  state.counters["read_Bps"] =
      Counter(static_cast<double>(BandwidthBytes()) * state.iterations(), Counter::kIsRate);
}
BENCHMARK(BM_ReadBandwidthSum)
    ->ArgNames({"streams", "prefetch"})
    ->ArgsProduct({{1, 2, 4, 8}, {1, 0}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_ReadBandwidthSgemv(benchmark::State& state) {
  ReadBufferBySgemv();  // untimed, as above
  for (auto _ : state) ReadBufferBySgemv();
  state.counters["read_Bps"] =
      Counter(static_cast<double>(BandwidthBytes()) * state.iterations(), Counter::kIsRate);
}
BENCHMARK(BM_ReadBandwidthSgemv)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_ReadBandwidthRowDots(benchmark::State& state) {
  ReadBufferByRowDots();  // untimed, as above
  for (auto _ : state) ReadBufferByRowDots();
  state.counters["read_Bps"] =
      Counter(static_cast<double>(BandwidthBytes()) * state.iterations(), Counter::kIsRate);
}
BENCHMARK(BM_ReadBandwidthRowDots)->UseRealTime()->Unit(benchmark::kMillisecond);

// Times SwigluForward over `tokens` tokens, each iteration on the next of the experts in `storage`.
void TimeSwiglu(benchmark::State& state, WeightStorage storage, int64_t tokens,
                const SwigluOptions& options) {
  const std::vector<SwigluWeights>& experts = Experts(storage);
  const Matrix x = Tokens(tokens);
  Matrix y(tokens, kDModel);
  int e = 0;
  for (auto _ : state) {
    const absl::Status status = SwigluForward(experts[e++ % kExperts], x, y.view(), options);
    if (!status.ok()) {
      state.SkipWithError(std::string(status.message()).c_str());
      break;
    }
  }
  SetRates(state, static_cast<double>(experts[0].bytes()), Flops(tokens), tokens);
}

// args: tokens, storage (0 F32, 1 BF16, 2 int8), path (0 auto, 1 streaming, 2 BLAS, 3 bf16
// activations), isa (0: the best this CPU has, 1: no AVX-512, i.e. AVX2, 2: portable C++)
void BM_Swiglu(benchmark::State& state) {
  const int64_t tokens = state.range(0);
  const WeightStorage storage = StorageArg(state.range(1));
  constexpr SwigluPath kPaths[] = {SwigluPath::kAuto, SwigluPath::kStreaming, SwigluPath::kBlas,
                                   SwigluPath::kBf16Dot};
  SwigluOptions options = PoolOptions(kPaths[state.range(2)]);
  options.allow_avx512 = state.range(3) == 0;
  options.allow_avx2 = state.range(3) < 2;
  TimeSwiglu(state, storage, tokens, options);
}
// The figures: few tokens (bandwidth) and many tokens (FLOP/s), every storage.
BENCHMARK(BM_Swiglu)
    ->ArgNames({"M", "storage", "path", "isa"})
    ->ArgsProduct({{1, 2, 4, 8, 128, 256}, {0, 1, 2}, {0}, {0}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// The switch point: both paths at every token count that could hold it.
void BM_Switch(benchmark::State& state) { BM_Swiglu(state); }
BENCHMARK(BM_Switch)
    ->ArgNames({"M", "storage", "path", "isa"})
    ->ArgsProduct({{1,  2,  4,  8,  12, 16,  20,  24,  28,  32,
                    40, 48, 56, 64, 96, 128, 192, 256, 512, 1024},
                   {0, 1},
                   {1, 2},
                   {0, 1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// The switch points of int8 weights: the automatic path (path 0: with AMX, the staged AMX-BF16
// tiles from kInt8StagedMinTokens), the streaming path's int16 dots (path 1: AVX512-VNNI) and the
// BLAS path (path 2: dequantised blocks).
void BM_Int8Switch(benchmark::State& state) {
  const SwigluPath paths[] = {SwigluPath::kAuto, SwigluPath::kStreaming, SwigluPath::kBlas};
  TimeSwiglu(state, WeightStorage::kInt8, state.range(0), PoolOptions(paths[state.range(1)]));
}
BENCHMARK(BM_Int8Switch)
    ->ArgNames({"M", "path"})
    ->ArgsProduct({{2, 4, 8, 12, 16, 24, 32, 64, 128, 192, 256, 512, 1024}, {0, 1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// The switch point of the bf16-activation path (the kernels' min_tokens): BF16 weights on the
// streaming kernel (float32 activations) against the bf16-activation path.
void BM_Bf16Switch(benchmark::State& state) { BM_Swiglu(state); }
BENCHMARK(BM_Bf16Switch)
    ->ArgNames({"M", "bf16", "path", "isa"})
    ->ArgsProduct({{2, 4, 6, 8, 12, 16, 24, 32, 64, 256}, {1}, {1, 3}, {0}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// The streaming kernel's compute rate with the weights in cache (one expert of width 704, 4-9 MB,
// called again and again): what it could do if DRAM were free. args: tokens, storage.
void BM_SwigluCacheResident(benchmark::State& state) {
  const int64_t tokens = state.range(0), width = 704;
  const WeightStorage storage = StorageArg(state.range(1));
  Matrix gate(width, kDModel), up(width, kDModel), down(kDModel, width);
  for (int64_t i = 0; i < gate.size(); ++i) {
    gate.data()[i] = up.data()[i] = down.data()[i] = 0.01f * static_cast<float>(i % 13);
  }
  auto w = SwigluWeights::FromF32(gate, up, down, storage);
  const SwigluOptions options = PoolOptions(SwigluPath::kStreaming);
  const Matrix x = Tokens(tokens);
  Matrix y(tokens, kDModel);
  for (auto _ : state) benchmark::DoNotOptimize(SwigluForward(*w, x, y.view(), options));
  SetRates(state, static_cast<double>(w->bytes()), 6.0 * tokens * kDModel * width, tokens);
}
BENCHMARK(BM_SwigluCacheResident)
    ->ArgNames({"M", "storage"})
    ->ArgsProduct({{1, 4, 8, 16}, {0, 1, 2}})
    ->UseRealTime();

// args: tokens, stacked (gate and up in one [2h, d] sgemm)
void BM_PlainSgemm(benchmark::State& state) {
  const int64_t tokens = state.range(0);
  const Matrix x = Tokens(tokens);
  int e = 0;
  for (auto _ : state) PlainSgemm(e++, x, state.range(1) != 0);
  SetRates(state, static_cast<double>(Experts(WeightStorage::kF32)[0].bytes()), Flops(tokens),
           tokens);
}
BENCHMARK(BM_PlainSgemm)
    ->ArgNames({"M", "stacked"})
    ->ArgsProduct({{1, 2, 4, 8, 16, 128, 256}, {0, 1}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// The AMX bf16 dots alone on the calling thread: blocks of rows_per_block weight rows (64 in
// place, 32 staged) × 2048 columns (one dots call each, what the FFN path hands the kernel)
// against M packed tokens, the weights either one block read again and again (`dram` 0: from L2,
// the kernel's compute rate) or 1 GB of blocks read once per iteration (`dram` 1), by the in-place
// kernel (`staged` 0) or the staged one (1).
// weight_Bps counts each block once per call. args: M, dram, staged.
void BM_AmxBf16Dots(benchmark::State& state) {
  const Bf16DotKernels* amx = state.range(2) != 0 ? AmxBf16StagedDotKernels() : AmxBf16DotKernels();
  if (amx == nullptr) {
    state.SkipWithError("this CPU (or process) has no AMX-BF16");
    return;
  }
  const int64_t tokens = state.range(0), k = 2048, block_rows = amx->rows_per_block;
  const int64_t blocks = state.range(1) != 0 ? (int64_t{1} << 30) / (block_rows * k * 2) : 1;
  static std::vector<Bf16Matrix> weights(2);  // built once per kind, shared by every M
  Bf16Matrix& w = weights[state.range(1) != 0];
  if (w.rows() == 0) {
    w = Bf16Matrix(blocks * block_rows, k,
                   std::vector<uint16_t>(blocks * block_rows * k, uint16_t{0x3c00}));
  }
  const Matrix x = Filled(tokens, k, 1.0f, 99);
  std::vector<uint16_t> packed(amx->packed_values(tokens, w.padded_cols()), 0);
  amx->pack(x.row(0), k, tokens, k, 0, 0, w.padded_cols(), packed.data());
  std::vector<float> out(tokens * block_rows);
  for (auto _ : state) {
    for (int64_t b = 0; b < blocks; ++b) {
      amx->dots(w.quad(b * block_rows / 4), block_rows, w.padded_cols(), packed.data(), 0, tokens,
                out.data(), block_rows);
    }
    benchmark::DoNotOptimize(out.data());
  }
  const double bytes = static_cast<double>(blocks * block_rows * k * 2);
  SetRates(state, bytes, bytes * tokens, tokens * blocks);
}
BENCHMARK(BM_AmxBf16Dots)
    ->ArgNames({"M", "dram", "staged"})
    ->ArgsProduct({{8, 16, 24, 32, 40, 48, 64}, {0, 1}, {0, 1}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace moe::bench

int main(int argc, char** argv) {
  moe::UseBestBlasKernels(argv);
  benchmark::Initialize(&argc, argv);
  // --kernel_threads=N (default: one per core) sets both the kernel pool and OpenBLAS, so both
  // paths get the same cores.
  int threads = 0;  // one per core
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--kernel_threads=", 0) == 0) {
      threads = std::atoi(arg.c_str() + 17);
      for (int j = i; j + 1 < argc; ++j) argv[j] = argv[j + 1];
      --argc;
      break;
    }
  }
  moe::bench::InitThreads(threads);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
