// AVX512-VNNI build of the int8 row dots (RowDotKernels::quantize_activations, dots_int8_q).
// Every function here is compiled for AVX-512F/BW/VL/DQ + AVX512-VNNI through MOE_ISA_TARGET_BEGIN
// below (isa_target.h) and only reached after Avx512VnniRowDotKernels() checked the CPU at run
// time.
//
// Why: widening int8 weights to float32 costs two instructions per 16 weights before the FMA, which
// bounds the one-token int8 FFN on two cores below the memory's rate. Here each 64-byte line of a
// quad (16 columns of 4 rows) is sign-extended to int16 in two instructions and multiplied into
// int32 sums by two vpdpwssd (two products per lane each), against activations rounded to int16.
#include "common/kernels/row_dot_kernel.h"

#if defined(__x86_64__) && defined(__GNUC__)

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "common/kernels/few_token_prefetch.h"
#include "common/kernels/int8_matrix.h"
#include "common/kernels/isa_target.h"
#include "common/kernels/token_tiles.h"

MOE_ISA_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma")

namespace moe {
namespace {

constexpr int kRows = Int8Matrix::kQuadRows;
constexpr int kMaxTokens = 8;  // 2 × 8 int32 accumulators + 2 weight lines + x in 32 registers
// Software prefetch, per stream (a quad): into L1 this far ahead, and, in the four-stream set past
// 4 tokens, into L2 further ahead. Served layer, int8, one token, alternating builds, when four
// streams read neighbouring quads at one token too: on the Intel Xeon with AMX the L2 prefetch 8 KB
// ahead read 8-12% faster than the L1 one alone (4 KB +4-7%, 16 KB as 8 KB); on a Zen 5 (one
// stream) 2-17% slower (Qwen3 and OLMoE, nine pairs); in the bf16 row dots (avx512 kernel) 5%
// slower on the Xeon. One and two tokens' four parts read without it (Parts). Calls of 2-16
// tokens one quad at a time prefetch into L2 32 KB ahead (few_token_prefetch.h).
// The L1 distance of the four-stream set (S > 1), 2 KB, was measured on a Zen 5
// (`moe_decode_bench`, the distances taking turns in one process, 8-10 rounds, median weight
// GB/s, OLMoE / Qwen3): one token 1 KB 48.4 / 45.5, 2 KB 53.3 / 50.8, 3 KB 53.6 / 49.8, 4 KB
// 52.1, 512 B 45.1, none 50.5; 2 tokens 39.2 / 39.5 → 43.0 / 42.7, 4 tokens 37.4 / 36.8 → 40.1 /
// 39.0, 8 tokens 24.9 / 26.1 → 25.2 / 27.1. The one-stream set (Zen 4's default) keeps 1 KB
// (on a Zen 4, one token, the same harness: 2 KB 0.98× as fast, 10 rounds).
template <int S>
constexpr int64_t kPrefetchBytes = S > 1 ? 2048 : 1024;
constexpr int64_t kPrefetchL2Bytes = 8192;
static_assert(kRows == 4 && Int8Matrix::kChunkCols == 16);

void QuantizeActivations(const float* x, int64_t ldx, int64_t tokens, int64_t k, int16_t* xq,
                         int64_t ldq, float* x_scales, bool* finite) {
  const float levels = static_cast<float>(Int8ActivationLevels(k));
  const __m512 sign = _mm512_set1_ps(-0.0f);
  *finite = true;
  for (int64_t t = 0; t < tokens; ++t) {
    const float* row = x + t * ldx;
    int16_t* q = xq + t * ldq;
    __m512 max_abs = _mm512_setzero_ps();
    __mmask16 nan = 0;  // vmaxps keeps its second operand when one is NaN: NaNs are found apart
    for (int64_t i = 0; i < k; i += 16) {
      const __m512 v = _mm512_loadu_ps(row + i);
      max_abs = _mm512_max_ps(max_abs, _mm512_andnot_ps(sign, v));
      nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    }
    const float amax = _mm512_reduce_max_ps(max_abs);
    if (nan != 0 || !std::isfinite(amax)) {
      *finite = false;
      return;
    }
    x_scales[t] = amax / levels;
    const __m512 inverse = _mm512_set1_ps(amax > 0 ? levels / amax : 0.0f);
    for (int64_t i = 0; i < k; i += 16) {
      // Rounded to nearest (MXCSR's default), |value| ≤ levels < 2^15: the narrowing is exact.
      const __m512i rounded = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(row + i), inverse));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), _mm512_cvtepi32_epi16(rounded));
    }
  }
}

// The low four lanes of v plus its high four.
inline __m256d HalvesAdded(__m512d v) {
  return _mm256_add_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd(v, 1));
}

// A quad's four row sums (rows01: lanes 0-7 row 0, 8-15 row 1; rows23 likewise). Each lane holds
// k / 8 products (Int8ActivationLevels keeps it inside int32); a row's eight lanes are added in
// double, where the k products' total is exact, then rounded to float32 once.
inline __m128 QuadSums(__m512i rows01, __m512i rows23) {
  const __m512d r0 = _mm512_cvtepi32_pd(_mm512_castsi512_si256(rows01));
  const __m512d r1 = _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(rows01, 1));
  const __m512d r2 = _mm512_cvtepi32_pd(_mm512_castsi512_si256(rows23));
  const __m512d r3 = _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(rows23, 1));
  // Four lanes each (HalvesAdded), then two (hadd pairs rows), then one.
  const __m256d rows_01 = _mm256_hadd_pd(HalvesAdded(r0), HalvesAdded(r1));  // r0 r1 r0 r1
  const __m256d rows_23 = _mm256_hadd_pd(HalvesAdded(r2), HalvesAdded(r3));  // r2 r3 r2 r3
  const __m256d sums = _mm256_add_pd(_mm256_permute2f128_pd(rows_01, rows_23, 0x20),
                                     _mm256_permute2f128_pd(rows_01, rows_23, 0x31));
  return _mm256_cvtpd_ps(sums);
}

// sums += the pairwise products of w and x (vpdpwssd), in place: GCC 12's _mm512_dpwssd_epi32
// copies every accumulator through another register and back each round.
inline void AccumulateDots(__m512i& sums, __m512i w, __m512i x) {
  asm("vpdpwssd %2, %1, %0" : "+v"(sums) : "v"(w), "v"(x));
}

// out[t * ldo + r], t < T, for the rows r < `rows` of Q quads read side by side (Q streams), quad
// q holding rows first_rows[q] to first_rows[q] + 3 of `quads`, and T tokens of int16
// activations. `prefetch` on the first token tile of a quad only: into L1 kL1Bytes ahead, into L2
// as well, kL2Bytes ahead, unless that is 0.
template <int Q, int T, int64_t kL1Bytes, int64_t kL2Bytes>
void Tile(const int8_t* quads, const float* scales, const int64_t (&first_rows)[Q], int64_t rows,
          int64_t k, const int16_t* xq, int64_t ldq, const float* x_scales, float* out, int64_t ldo,
          bool prefetch) {
  static_assert(Q * T <= kMaxTokens, "2 × Q × T int32 sums, x and two weight lines in registers");
  // int32 lanes 0-7: the first row of the pair, 8-15: the second.
  __m512i rows01[Q][T], rows23[Q][T];
#pragma GCC unroll 8
  for (int q = 0; q < Q; ++q) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) rows01[q][t] = rows23[q][t] = _mm512_setzero_si512();
  }
  const int8_t* starts[Q];  // each quad's first line
#pragma GCC unroll 8
  for (int q = 0; q < Q; ++q) starts[q] = quads + first_rows[q] * k;
  for (int64_t i = 0; i < k; i += 16) {
#pragma GCC unroll 4
    for (int q = 0; q < Q; ++q) {
      const int8_t* line = starts[q] + i * kRows;
      if (prefetch) {
        _mm_prefetch(reinterpret_cast<const char*>(line) + kL1Bytes, _MM_HINT_T0);
        if constexpr (kL2Bytes > 0) {
          _mm_prefetch(reinterpret_cast<const char*>(line) + kL2Bytes, _MM_HINT_T1);
        }
      }
      const __m512i w01 =
          _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(line)));
      const __m512i w23 =
          _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(line + 32)));
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const __m512i xv = _mm512_broadcast_i64x4(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + t * ldq + i)));
        AccumulateDots(rows01[q][t], w01, xv);
        AccumulateDots(rows23[q][t], w23, xv);
      }
    }
  }
#pragma GCC unroll 8
  for (int q = 0; q < Q; ++q) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const int64_t row = first_rows[q];
      const __mmask8 valid =
          static_cast<__mmask8>((1u << std::min<int64_t>(kRows, rows - row)) - 1);
      const __m128 sums = QuadSums(rows01[q][t], rows23[q][t]);
      const __m128 row_scales = _mm_maskz_loadu_ps(valid, scales + row);
      _mm_mask_storeu_ps(out + t * ldo + row, valid,
                         _mm_mul_ps(_mm_mul_ps(row_scales, _mm_set1_ps(x_scales[t])), sums));
    }
  }
}

// One quad's T tokens (rows r0 to r0 + 3, those below `rows`).
template <int T, int64_t kL1Bytes, int64_t kL2Bytes>
void OneQuad(const int8_t* quads, const float* scales, int64_t r0, int64_t rows, int64_t k,
             const int16_t* xq, int64_t ldq, const float* x_scales, float* out, int64_t ldo,
             bool prefetch) {
  const int64_t first_row[1] = {r0};
  Tile<1, T, kL1Bytes, kL2Bytes>(quads, scales, first_row, rows, k, xq, ldq, x_scales, out, ldo,
                                 prefetch);
}

// T tokens (1 or 2) over S quads side by side, one from each of S parts of the call's rows
// (ForEachRowPart, token_tiles.h), so that each stream runs on through its part; without the
// L2 prefetch. Measured on a 2-core Zen 5 (`moe_decode_bench --shape=olmoe|qwen3`, the readings
// taking turns in one process, median weight GB/s), one token (12 rounds): one quad at a time
// 48.6 / 41.1, neighbouring quads with the L2 prefetch 8 KB ahead (what four streams read before)
// 41.6 / 36.4, four parts 52.4 / 43.9, four parts with that L2 prefetch 45.4 / 41.7; two tokens
// (10 rounds): neighbouring quads with it 35.5 / 34.3, one quad at a time 37.3 / 36.2, four parts
// 40.3 / 38.2 (with the L2 prefetch 32 KB ahead 37.6 / 35.0).
template <int S, int T>
void Parts(const int8_t* quads, const float* scales, int64_t rows, int64_t k, const int16_t* xq,
           int64_t ldq, const float* x_scales, float* out, int64_t ldo) {
  ForEachRowPart<S>(
      rows, kRows,
      [&](const int64_t(&first_rows)[S]) {
        Tile<S, T, kPrefetchBytes<S>, 0>(quads, scales, first_rows, rows, k, xq, ldq, x_scales, out,
                                         ldo, true);
      },
      [&](int64_t r0, int) {
        OneQuad<T, kPrefetchBytes<S>, 0>(quads, scales, r0, rows, k, xq, ldq, x_scales, out, ldo,
                                         true);
      });
}

// S > 1 streams: one and two tokens read S parts side by side (Parts). Otherwise one quad at a
// time in token tiles, prefetched into L2 as well: from 2 tokens to 16 (and with S > 1 from 3)
// kFewTokenL2PrefetchBytes ahead (few_token_prefetch.h); with S > 1 past 4 tokens
// kPrefetchL2Bytes ahead instead (its setting when it read neighbouring quads at 2-4 tokens; later
// measured, below). At 3-4 tokens, Zen 5 as above (10 rounds, 4 tokens): two neighbouring
// quads side by side with the L2 prefetch 8 KB ahead 29.3 / 29.5 GB/s, two parts 30.7 / 31.8, one
// quad at a time 36.2 / 33.9. The four-stream set on a Zen 4 (whose default is one stream; 8
// rounds, OLMoE / Qwen3), side by side with the 8 KB prefetch → parts or one quad at a time: 2
// tokens 22.9 / 23.6 → four parts 28.2 / 25.2 (one quad 34.7 / 28.1), 3 tokens 25.0 / 22.0 → one
// quad 30.6 / 24.7 (two parts 26.5 / 23.2), 4 tokens 22.8 / 21.9 → 25.4 / 24.6 (21.8 / 22.5).
// Later, on the Zen 5 (turns in one process, OLMoE / Qwen3): one quad at a time with the L2
// prefetch 8 KB ahead instead of 32 KB read 3 tokens at 30.4 → 32.2 / 29.8 → 31.9 GB/s and 4 at
// 29.1 → 31.1 / 29.2 → 30.4 (12 rounds), but served in process it lost (int8, `moe_layer_bench
// --mode=inprocess --tokens=24`, ~3 tokens per expert call, four alternating pairs: 0.95-0.99x),
// so 3-4 tokens keep 32 KB. Past 4 tokens (8 rounds) 8 KB read 2-6% faster than 32 KB at 5-12
// tokens, alike from 16; no L2 prefetch 4-13% slower.
template <int S>
void DotsInt8Quantized(const int8_t* quads, const float* scales, int64_t rows, int64_t k,
                       const int16_t* xq, int64_t ldq, const float* x_scales, int64_t tokens,
                       float* out, int64_t ldo) {
  if constexpr (S > 1) {
    if (tokens == 1) return Parts<S, 1>(quads, scales, rows, k, xq, ldq, x_scales, out, ldo);
    if (tokens == 2) return Parts<S, 2>(quads, scales, rows, k, xq, ldq, x_scales, out, ldo);
  }
  auto tiles = [&](auto l2_bytes) {
    ForEachRowGroupTile<kMaxTokens>(
        rows, kRows, tokens, [&](auto tile, int64_t r0, int, int64_t t) {
          OneQuad<decltype(tile)::value, kPrefetchBytes<S>, decltype(l2_bytes)::value>(
              quads, scales, r0, rows, k, xq + t * ldq, ldq, x_scales + t, out + t * ldo, ldo,
              t == 0);
        });
  };
  if (S > 1 && tokens > 4) return tiles(std::integral_constant<int64_t, kPrefetchL2Bytes>());
  if (UsesFewTokenL2Prefetch(tokens)) {
    return tiles(std::integral_constant<int64_t, kFewTokenL2PrefetchBytes>());
  }
  tiles(std::integral_constant<int64_t, 0>());
}

// The AVX-512 set of S streams with these int8 dots (instantiated here, inside the target).
template <int S>
RowDotKernels WithInt16Dots(const RowDotKernels& avx512) {
  RowDotKernels set = avx512;
  set.name = "avx512vnni";
  set.quantize_activations = &QuantizeActivations;
  set.dots_int8_quantized = &DotsInt8Quantized<S>;
  return set;
}
template RowDotKernels WithInt16Dots<1>(const RowDotKernels&);
template RowDotKernels WithInt16Dots<4>(const RowDotKernels&);

}  // namespace
}  // namespace moe

MOE_ISA_TARGET_END()

namespace moe {

const RowDotKernels* Avx512VnniRowDotKernels(int one_token_streams) {
  __builtin_cpu_init();
  const RowDotKernels* avx512 = Avx512RowDotKernels(one_token_streams);
  if (avx512 == nullptr || !__builtin_cpu_supports("avx512vnni")) return nullptr;
  static const RowDotKernels one_stream = WithInt16Dots<1>(*Avx512RowDotKernels(1));
  static const RowDotKernels four_streams = WithInt16Dots<4>(*Avx512RowDotKernels(4));
  return one_token_streams == 1 ? &one_stream : &four_streams;
}

}  // namespace moe

#else  // not x86-64 GCC/Clang

namespace moe {
const RowDotKernels* Avx512VnniRowDotKernels(int) { return nullptr; }
}  // namespace moe

#endif
