// How far ahead the streaming dots of a few tokens (UsesFewTokenL2Prefetch: 2-16 per dots call)
// also prefetch their weights into L2: the float32 four-row tile and the int8 VNNI tiles of the
// AVX-512 one-stream set (Zen 4's default, row_dot_kernel.h; the four-stream set's at 3-4 tokens
// too), the AVX-512 BF16 quads of both sets (measured on a Zen 5: row_dot_kernel_avx512.cc), the
// AVX2 float32 tile, and the AVX512-BF16 tiles (from 7 tokens where 4-6 read two parts without it,
// bf16_dot_kernel_avx512bf16.cc). From 2-4 tokens a tile's FMAs take about as long as its reads;
// with only the short L1 prefetch the reads waited on the FMAs and DRAM idled (a tile at 4 tokens
// streamed at the rate of "read, then compute" without overlap). Pulling the lines this far ahead
// into L2 keeps DRAM streaming meanwhile.
//
// Measured on a Zen 4 (`lscpu` family 25 model 17, 2 cores, KVM, 32 MB L3), `moe_decode_bench
// --shape=olmoe --rounds=1 --clock=thread_cpu` (weight bytes per CPU-second ÷ the read bandwidth
// around each pass), the build before and this one taking turns, seven pairs, median fraction:
// float32 0.62 -> 0.85 at 4 tokens, 0.48 -> 0.60 at 8; bf16 0.71 -> 0.79 at 4, 0.48 -> 0.90 at 8;
// int8 0.79 -> 1.05 at 2, 0.57 -> 0.86 at 4. The AVX2 float32 tile, on the same CPU under
// MOE_KERNELS=avx2, three pairs: 0.45-0.52 -> 0.64-0.98 at 2 tokens, 0.30-0.44 -> 0.56-0.66 at 4,
// 0.26-0.29 -> 0.38-0.42 at 8; on a Zen 3 (no AVX-512; family 25 model 1), three pairs: 0.64-0.65
// -> 0.68-0.70 at 2, 0.50-0.52 -> 0.55-0.62 at 4, 0.38-0.40 -> 0.41-0.45 at 8, beside the tile's
// L1 prefetch of then; since the tile does without that (faster there: row_dot_kernel_avx2.cc),
// the far prefetch measured neutral on it (three pairs, fp32 tokens/s at 2 / 4 / 8 tokens 224-233
// / 329-342 / 499-504 with it, 222-248 / 342-350 / 502-518 without). On that Zen 3 the
// AVX2 BF16 and int16 (int8 weights) tiles lost with it (2 tokens: BF16 0.75-0.78 -> 0.62-0.63,
// int8 0.66-0.74 -> 0.52-0.56; 4 and 8 tokens alike), so they keep the L1 prefetch alone. On the
// Zen 4, 16, 32 and 64 KB measured alike (float32 at 4 tokens 0.80-0.87, 0.81-0.87, 0.86-0.93,
// against 0.60-0.67 without). One-token int8 stays without it (2-17% slower on a Zen 5 with an 8
// KB L2 prefetch). The four-stream set (the default of Zen 5 and Intel CPUs) otherwise keeps its
// own settings for float32 and int8 (measured on a Zen 5: row_dot_kernel_avx512*.cc). The
// AVX512-BF16 tiles take it on any CPU (Intel CPUs with AMX run these calls on the tiles instead).
// README "Weight streams at a few tokens" has the served figures.
#ifndef MOE_COMMON_KERNELS_FEW_TOKEN_PREFETCH_H_
#define MOE_COMMON_KERNELS_FEW_TOKEN_PREFETCH_H_

#include <cstdint>

namespace moe {

inline constexpr int64_t kFewTokenL2PrefetchBytes = 32 * 1024;

// Calls of this many tokens read their weights from DRAM in one or two token tiles; more tokens
// compute longer per byte read and were not measured with the far prefetch.
inline constexpr bool UsesFewTokenL2Prefetch(int64_t tokens) { return tokens >= 2 && tokens <= 16; }

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_FEW_TOKEN_PREFETCH_H_
