// How far ahead the streaming dots of a few tokens (UsesFewTokenL2Prefetch: 2-16 per dots call)
// also prefetch their weights into L2: the float32 four-row tile and the int8 VNNI tiles of the
// one-stream set (the AMD default, row_dot_kernel.h), and the AVX512-BF16 tiles (from their 4
// tokens). From 2-4 tokens a tile's FMAs take about as long as its reads; with only
// the short L1 prefetch the reads waited on the FMAs and DRAM idled (a tile at 4 tokens streamed at
// the rate of "read, then compute" without overlap). Pulling the lines this far ahead into L2 keeps
// DRAM streaming meanwhile.
//
// Measured on a Zen 4 (`lscpu` family 25 model 17, 2 cores, KVM, 32 MB L3), `moe_decode_bench
// --shape=olmoe --rounds=1 --clock=thread_cpu` (weight bytes/s ÷ the read bandwidth around each
// pass), runs with and without taking turns, fraction of read bandwidth:
//   float32, 4 tokens: 0.60-0.67 without (five runs); 0.80-0.87 at 16 KB, 0.81-0.87 at 32 KB,
//     0.86-0.93 at 64 KB; 8 tokens 0.49-0.54 against 0.53-0.67.
//   bf16 (AVX512-BF16), 4 tokens 0.44-0.81 against 0.72-0.96; 8 tokens 0.44-0.54 against 0.67-0.97.
//   int8 (VNNI), 2 tokens 0.62-0.78 against 0.91-1.17; 4 tokens 0.36-0.66 against 0.78-0.82.
// One-token int8 stays without it (2-17% slower on a Zen 5 with an 8 KB L2 prefetch). The
// four-stream set (Intel CPUs' default) keeps its own settings: not measured there. README
// "Weight streams at a few tokens" has the served figures.
#ifndef MOE_COMMON_KERNELS_FEW_TOKEN_PREFETCH_H_
#define MOE_COMMON_KERNELS_FEW_TOKEN_PREFETCH_H_

#include <cstdint>

namespace moe {

inline constexpr int64_t kFewTokenL2PrefetchBytes = 32 * 1024;

// Calls of this many tokens stream their weights once or twice (a token tile or two) at a rate
// the far prefetch helps; from more the tiles are compute-bound and it was not measured.
inline constexpr bool UsesFewTokenL2Prefetch(int64_t tokens) { return tokens >= 2 && tokens <= 16; }

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_FEW_TOKEN_PREFETCH_H_
