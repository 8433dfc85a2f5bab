// Shared set-up of the kernel benchmarks (moe_kernels_bench, moe_kernel_ratios): the bench shape,
// eight random experts per storage dtype (rotated so every call streams its weights from DRAM —
// 8 × 34.6 MB fp32 is far beyond the 32 MB L3), the reference read-bandwidth measurements, and
// plain OpenBLAS on the FFN's shapes. Built lazily on first use; not thread-safe (benchmarks
// drive it from one thread).
#ifndef MOE_BENCH_BENCH_EXPERTS_H_
#define MOE_BENCH_BENCH_EXPERTS_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "common/kernels/swiglu_ffn.h"
#include "common/kernels/swiglu_weights.h"
#include "common/kernels/thread_pool.h"
#include "common/tensor/matrix.h"

namespace moe::bench {

inline constexpr int64_t kDModel = 1024;
inline constexpr int64_t kWidth = 2816;
inline constexpr int kExperts = 8;

// The threads of the benchmarks, as a shard has them: one kernel pool of `threads` (≤ 0: one per
// core) and as many OpenBLAS threads, so both FFN paths get the same cores. Call once, from main,
// before anything below.
void InitThreads(int threads);
int Threads();
KernelThreadPool& Pool();
// Deterministic values in ±scale (a seeded LCG: no <random> cost over 70 M weights).
Matrix Filled(int64_t rows, int64_t cols, float scale, uint64_t seed);
// SwigluForward options on Pool().
SwigluOptions PoolOptions(SwigluPath path = SwigluPath::kAuto);

// Experts 0..7 stored as `storage` (kF32 or kBF16; the BF16 ones are the F32 ones rounded).
const std::vector<SwigluWeights>& Experts(WeightStorage storage);
// [tokens, d_model] of deterministic values.
Matrix Tokens(int64_t tokens);

// Reference read bandwidth: one pass over an fp32 buffer of BandwidthBytes() (256 MB unless
// SetBandwidthBytes chose otherwise before the first pass; it must exceed the last-level cache),
// laid out as the weights are (WeightBuffer: cache-line aligned, huge pages), read as
//   Sum      summed in tasks of 1 MB on Pool() (the threads the FFN kernel uses), each task read
//            as `streams` equal runs side by side, with or without a software prefetch 1 KB ahead
//            (one core's read rate depends on both, by CPU: an Intel Xeon core read ~1.6x faster
//            from four streams; on a Zen 5 the best pass without the prefetch, two streams at
//            54 GB/s, beat the best with it, one stream at 47-48, by 11-17%: two runs of
//            moe_kernels_bench --benchmark_filter=BM_ReadBandwidth, where RowDots read 45-49 and
//            Sgemv 55-59)
//   RowDots  a matrix-vector product [rows × 8192] by the FFN's own row-dot kernel on that pool:
//            the same loads, without the FFN's three matrices, phases and SiLU
//   Sgemv    OpenBLAS sgemv on the same matrix (with the current BLAS threads); the one call to
//            OpenBLAS outside common/kernels/blas_kernels, as it measures OpenBLAS itself
int64_t BandwidthBytes();
void SetBandwidthBytes(int64_t bytes);  // rounded down to a multiple of 32 MB, at least 32 MB
struct SumReads {
  int streams = 1;  // 1, 2, 4 or 8
  bool prefetch = true;
};
// Every Sum pass the reference bandwidth takes the best of.
inline constexpr SumReads kSumReads[] = {{1, true},  {2, true},  {4, true},  {8, true},
                                         {1, false}, {2, false}, {4, false}, {8, false}};
void ReadBufferBySum(SumReads reads = {});
void ReadBufferByRowDots();
void ReadBufferBySgemv();
// The machine's read bandwidth in bytes/s: BandwidthBytes() ÷ the fastest of a Sum pass of each of
// kSumReads and a RowDots pass, each the median of `rounds`.
double MeasureReadBandwidth(int rounds);

// The three sgemm calls of the FFN (x·gateᵀ, x·upᵀ, act·downᵀ) on F32 expert `e`, without the
// SiLU: plain OpenBLAS on the same shapes. `stacked` does gate and up in one [2h, d] sgemm.
void PlainSgemm(int e, const Matrix& x, bool stacked);

// Median seconds of one call of fn(call) over `rounds` rounds of `calls` calls (after one warm-up
// call); the call index lets fn rotate experts.
double MedianSeconds(const std::function<void(int)>& fn, int calls, int rounds);

}  // namespace moe::bench

#endif  // MOE_BENCH_BENCH_EXPERTS_H_
