// The AVX-512 float32 dots that read weight rows as whole streams instead of in the four-row tile
// (the AVX-512 sets' dots_f32, common/kernels/row_dot_kernel.h): one token, and a few tokens (with
// one stream per thread row by row, with four in four parts). Only for CPUs with AVX-512F/BW/VL/DQ
// and FMA (reached through Avx512RowDotKernels(), which checks); x86-64 GCC/Clang builds only.
// Stateless and thread-safe.
#ifndef MOE_COMMON_KERNELS_ROW_STREAMS_F32_AVX512_H_
#define MOE_COMMON_KERNELS_ROW_STREAMS_F32_AVX512_H_

#include <cstdint>

namespace moe {

// How far ahead the float32 dots prefetch along each row (the tile's rows too). Measured with
// BM_Switch (path:1) and a sweep of 512 B-32 KB, T0/T1/T2/NTA hints, on the 2-core Zen 5: the
// choice moves results by a few percent at most; this was best or tied at M = 1, 4, 8.
inline constexpr int64_t kPrefetchF32Bytes = 1024;

// With one stream per one-token dot (Zen 4's default), float32 rows of this many tokens are read
// one at a time, more tokens in the four-row tile. Measured on a Zen 4 (moe_decode_bench, fp32,
// two cores, weight bytes/s ÷ the read bandwidth bracketing each pass; OLMoE with the row loop
// switched on at run time against off, Qwen3 against MOE_ONE_TOKEN_STREAMS=4, two alternating
// pairs each): 2 tokens 0.70-0.90 against 0.54-0.58 (OLMoE) and 0.67-0.81 against 0.56-0.64
// (Qwen3); 4 tokens a wash (0.48-0.63 against 0.49-0.51, 0.51-0.52 against 0.53-0.57); 8 tokens
// 0.33-0.45 against 0.52-0.55 (a load of x per FMA no longer keeps up).
inline constexpr int kMaxOneStreamTokens = 2;

// out[r] = Σ_{i<k} w[r * ldw + i] · x[i] for r < rows, reading `streams` rows side by side (1 or
// 4; OneTokenStreamsFromEnv): with 4, one row from each quarter of the rows (ForEachRowPart,
// token_tiles.h), so each stream runs on through its quarter; the rows left over, one at a time.
void OneTokenDotsF32Avx512(int streams, const float* w, int64_t ldw, int64_t rows, int64_t k,
                           const float* x, float* out);

// out[t * ldo + r] = Σ_{i<k} w[r * ldw + i] · x[t * ldx + i] for r < rows and
// 2 ≤ tokens ≤ kMaxOneStreamTokens, one row at a time.
void FewTokenDotsF32Avx512(const float* w, int64_t ldw, int64_t rows, int64_t k, const float* x,
                           int64_t ldx, int64_t tokens, float* out, int64_t ldo);

// With four streams per thread, float32 calls of 2 to kMaxPartTokensF32 tokens read four parts,
// dotting up to kPartTileTokensF32 tokens per pass over a row (5 tokens' 20 sums, their x and a
// row's weights fill the 32 registers); more tokens take passes of balanced tiles
// (ForEachTokenTile), the later ones finding the rows in L1/L2.
inline constexpr int kPartTileTokensF32 = 5;
inline constexpr int kMaxPartTokensF32 = 12;

// out[t * ldo + r] = Σ_{i<k} w[r * ldw + i] · x[t * ldx + i] for r < rows and
// 2 ≤ tokens ≤ kMaxPartTokensF32: four rows side by side, one from each quarter of the rows
// (ForEachRowPart), each dotted with every token, tile by tile; the rows left over one at a time.
void PartsFewTokenDotsF32Avx512(const float* w, int64_t ldw, int64_t rows, int64_t k,
                                const float* x, int64_t ldx, int64_t tokens, float* out,
                                int64_t ldo);

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_ROW_STREAMS_F32_AVX512_H_
