// AVX-512 build of the row-dot kernels. Every function in this file is compiled for
// AVX-512F/BW/VL/DQ + FMA through MOE_ISA_TARGET_BEGIN below (isa_target.h), and is only
// reached after Avx512RowDotKernels() checked the CPU at run time.
#include "common/kernels/row_dot_kernel.h"

#if defined(__x86_64__) && defined(__GNUC__)

#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <iterator>
#include <type_traits>

#include "common/kernels/few_token_prefetch.h"
#include "common/kernels/int8_matrix.h"
#include "common/kernels/isa_target.h"
#include "common/kernels/row_streams_f32_avx512.h"
#include "common/kernels/silu_mul_avx512.h"
#include "common/kernels/token_tiles.h"
#include "common/tensor/bf16_matrix.h"

MOE_ISA_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,fma")

#include "common/kernels/row_readers_avx512.h"  // inside the target: its loads are AVX-512

namespace moe {
namespace {

constexpr int kMaxTokens = 6;  // 4 × 6 accumulators + 4 weights + x fit the 32 zmm registers

using avx512_rows::Bf16Quad;
using avx512_rows::F32Rows;
using avx512_rows::Int8Quad;
using avx512_rows::kRows;

// out[t * ldo + r] for r < num_rows, t < T. `prefetch` on the first token tile of a group only:
// later tiles find the rows in L1/L2.
template <typename Rows, int T>
void Tile(const Rows& rows, int num_rows, int64_t k, const float* x, int64_t ldx, float* out,
          int64_t ldo, bool prefetch) {
  __m512 acc[kRows][T];
#pragma GCC unroll 4
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  }
  typename Rows::Cursor cursor = rows.StartPrefetch();
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    if (prefetch) rows.Prefetch16(cursor);
    __m512 w[kRows];
    rows.Load(i, w);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const __m512 xv = _mm512_loadu_ps(x + t * ldx + i);
#pragma GCC unroll 4
      for (int r = 0; r < kRows; ++r) acc[r][t] = _mm512_fmadd_ps(w[r], xv, acc[r][t]);
    }
  }
  if (!Rows::kPadded && i < k) {
    const __mmask16 m = static_cast<__mmask16>((1u << (k - i)) - 1);
    __m512 w[kRows];
    rows.LoadTail(i, m, w);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + t * ldx + i);
#pragma GCC unroll 4
      for (int r = 0; r < kRows; ++r) acc[r][t] = _mm512_fmadd_ps(w[r], xv, acc[r][t]);
    }
  }
  // Indices the compiler can see (loops unrolled, the row count a guard): the sums stay in
  // registers through the loop above instead of being stored to the stack at every step.
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) {
#pragma GCC unroll 4
    for (int r = 0; r < kRows; ++r) {
      if (r < num_rows) out[t * ldo + r] = rows.Finish(r, _mm512_reduce_add_ps(acc[r][t]));
    }
  }
}

// Every row group's token tiles (token_tiles.h: 8 tokens run as 4 + 4, not 6 + 2), the group's
// rows made by group_at(first_row, rows). Measured: two tiles of four rows beat one tile of two
// rows × 8 tokens by ~40% (the latter spends a load on x for every two FMAs).
template <typename GroupAt>
void Dots(int64_t rows, int64_t k, const float* x, int64_t ldx, int64_t tokens, float* out,
          int64_t ldo, GroupAt group_at) {
  using Rows = decltype(group_at(0, 0));
  ForEachRowGroupTile<kMaxTokens>(
      rows, kRows, tokens, [&](auto tile, int64_t r0, int n, int64_t t) {
        Tile<Rows, decltype(tile)::value>(group_at(r0, n), n, k, x + t * ldx, ldx,
                                          out + t * ldo + r0, ldo, t == 0);
      });
}

// T tokens over Q quads (BF16 or int8) side by side: Q read streams per thread. Quad q holds rows
// first_rows[q] to first_rows[q] + 3; those below `rows` are written.
template <typename Quad, int Q, int T>
void PartQuads(const Quad (&quads)[Q], const int64_t (&first_rows)[Q], int64_t rows, int64_t k,
               const float* x, int64_t ldx, float* out, int64_t ldo) {
  __m512 acc[Q][kRows][T];
#pragma GCC unroll 4
  for (int q = 0; q < Q; ++q) {
#pragma GCC unroll 4
    for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) acc[q][r][t] = _mm512_setzero_ps();
    }
  }
  typename Quad::Cursor cursor[Q];
  for (int q = 0; q < Q; ++q) cursor[q] = quads[q].StartPrefetch();
  for (int64_t i = 0; i < k; i += 16) {  // k is padded to whole chunks
#pragma GCC unroll 4
    for (int q = 0; q < Q; ++q) {
      quads[q].Prefetch16(cursor[q]);
      __m512 w[kRows];
      quads[q].Load(i, w);
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        const __m512 xv = _mm512_loadu_ps(x + t * ldx + i);
#pragma GCC unroll 4
        for (int r = 0; r < kRows; ++r) acc[q][r][t] = _mm512_fmadd_ps(w[r], xv, acc[q][r][t]);
      }
    }
  }
#pragma GCC unroll 4
  for (int q = 0; q < Q; ++q) {
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
#pragma GCC unroll 4
      for (int r = 0; r < kRows; ++r) {
        if (first_rows[q] + r >= rows) continue;
        out[t * ldo + first_rows[q] + r] = quads[q].Finish(r, _mm512_reduce_add_ps(acc[q][r][t]));
      }
    }
  }
}

// The call's quads as Q parts side by side (ForEachRowPart, token_tiles.h), so that each stream
// runs on through its part, T tokens at once; the quads left over one by one.
template <int Q, int T, typename QuadAt>
void Parts(int64_t rows, int64_t k, const float* x, int64_t ldx, float* out, int64_t ldo,
           QuadAt quad_at) {
  using Quad = decltype(quad_at(0, 0));
  ForEachRowPart<Q>(
      rows, kRows,
      [&](const int64_t(&first_rows)[Q]) {
        Quad parts[Q];
        for (int q = 0; q < Q; ++q) parts[q] = quad_at(first_rows[q], kRows);
        PartQuads<Quad, Q, T>(parts, first_rows, rows, k, x, ldx, out, ldo);
      },
      [&](int64_t r0, int n) {
        const Quad one[1] = {quad_at(r0, n)};
        const int64_t first_row[1] = {r0};
        PartQuads<Quad, 1, T>(one, first_row, rows, k, x, ldx, out, ldo);
      });
}

// With S > 1 streams, calls of up to this many tokens read parts (PartDots); 2 quads × 4 rows × 3
// tokens accumulators + 4 weights + x fit the registers.
constexpr int kMaxPartTokens = 3;
template <int S>
constexpr bool ReadsParts(int64_t tokens) {
  return S > 1 && tokens <= kMaxPartTokens;
}

// The calls of S > 1 streams that ReadsParts (the others take Dots' token tiles): one token reads S
// quads side by side, one from each of S parts of the call's rows, and 2-3 tokens two parts.
// Measured on a 2-core Zen 5 (`moe_decode_bench --shape=olmoe|qwen3`, the readings taking turns in
// one process, median weight GB/s; README "One token: weight streams per thread" and "BF16 weights
// at 2-3 tokens on a Zen 5"): one token (12 rounds), one quad at a time bf16 56.1 / 49.0,
// neighbouring quads side by side 54.7 / 51.4, four parts 58.9 / 54.8; 2 and 3 tokens (8 rounds),
// one quad at a time with the far L2 prefetch 39.3 / 38.2 and 38.5 / 36.2, two parts without it
// 48.3 / 46.6 and 44.7 / 43.5 (with it 44.4 / 42.5 and 42.3 / 40.3).
template <int S, typename QuadAt>
void PartDots(int64_t rows, int64_t k, const float* x, int64_t ldx, int64_t tokens, float* out,
              int64_t ldo, QuadAt quad_at) {
  if (tokens == 1) return Parts<S, 1>(rows, k, x, ldx, out, ldo, quad_at);
  WithTokenCount<kMaxPartTokens>(tokens, [&](auto tile) {
    Parts<2, decltype(tile)::value>(rows, k, x, ldx, out, ldo, quad_at);
  });
}

// With S > 1 streams, float32 calls of 2-5 tokens read four rows side by side, one from each
// quarter of the call's rows, as one token does (row_streams_f32_avx512.h), instead of the four-row
// tile's neighbouring rows. On a 2-core Xeon with AMX (`moe_decode_bench --shape=olmoe|qwen3`, the
// two taking turns in one process, 8 rounds, median weight GB/s; README "Float32 at 2-5 tokens in
// four parts"): 2 tokens 29.5 → 31.9 / 27.9 → 31.8, 3 tokens 28.8 → 31.3 / 28.9 → 31.9, 4 tokens
// 29.2 → 31.9 / 28.1 → 29.8, 5 tokens 29.0 → 31.5 / 27.9 → 30.7; at 6 tokens (24 sums) 25.2
// against the tile's 28.7 / 27.8. Past 5 tokens the parts take passes of at most 5 tokens over
// each row (the later passes from L1/L2): on the paravirtualised Zen 5 (the same harness, 5
// rounds, OLMoE / Qwen3) 6 tokens 44.1 → 47.7 / 47.0 → 46.4, 7 tokens 37.7 → 45.7 / 38.3 → 45.7,
// 8 tokens 38.2 → 43.2 / 39.7 → 43.6, 10 tokens 34.1 → 37.4 / 35.8 → 39.9, 12 tokens 33.1 → 34.8
// / 31.5 → 34.2; 16 tokens alike, so the tile keeps calls of 13 tokens and more.
template <int S>
void DotsF32(const float* w, int64_t ldw, int64_t rows, int64_t k, const float* x, int64_t ldx,
             int64_t tokens, float* out, int64_t ldo) {
  if (tokens == 1) return OneTokenDotsF32Avx512(S, w, ldw, rows, k, x, out);
  if (S > 1 && tokens <= kMaxPartTokensF32) {
    return PartsFewTokenDotsF32Avx512(w, ldw, rows, k, x, ldx, tokens, out, ldo);
  }
  if (S == 1 && tokens <= kMaxOneStreamTokens) {
    return FewTokenDotsF32Avx512(w, ldw, rows, k, x, ldx, tokens, out, ldo);
  }
  auto dots = [&](auto far_l2) {
    Dots(rows, k, x, ldx, tokens, out, ldo, [&](int64_t r0, int n) {
      F32Rows<decltype(far_l2)::value> group;
      for (int q = 0; q < kRows; ++q) group.w[q] = w + (r0 + std::min(q, n - 1)) * ldw;
      group.k = k;
      group.next = kRows * ldw;
      return group;
    });
  };
  if (S == 1 && UsesFewTokenL2Prefetch(tokens)) return dots(std::true_type());
  dots(std::false_type());
}

// BF16 calls of 2-16 tokens (UsesFewTokenL2Prefetch) that read one quad at a time (all of them
// with one stream, from 4 tokens with S > 1) prefetch their quads into L2 as well. On the 2-core
// paravirtualised Zen 5 (`moe_decode_bench --shape=olmoe|qwen3`, with and without taking turns in
// one process, median weight GB/s, OLMoE / Qwen3), 8 rounds: 2 tokens 35.5 → 38.4 / 34.8 → 38.5, 3
// tokens 34.0 → 39.0 / 32.9 → 37.3 (an L1 prefetch 4-8 KB ahead instead: alike; two parts without
// either were faster still: PartDots); the AVX512-BF16 tiles off (MOE_KERNELS=avx512), 6 rounds: 4
// tokens 30.1 → 34.2 / 30.2 → 34.5, 6 27.9 → 31.2 / 27.9 → 31.2, 8-16 alike (21.3 → 21.5 / 21.9 →
// 21.6 at 8, 14.2 → 13.6 / 14.3 → 14.1 at 16). The float32 tile of the four-stream set lost with
// it on that CPU (3-17%, 2-16 tokens), so it reads without. Not measured on a Zen 4 (whose
// one-stream set reads these).
template <int S>
void DotsBf16(const uint16_t* quads, int64_t rows, int64_t k, const float* x, int64_t ldx,
              int64_t tokens, float* out, int64_t ldo) {
  auto quad_at = [quads, k](auto far_l2) {
    return
        [quads, k](int64_t r0, int) { return Bf16Quad<decltype(far_l2)::value>{quads + r0 * k}; };
  };
  if (ReadsParts<S>(tokens)) {
    const int64_t ahead =
        tokens == 1 ? avx512_rows::kPrefetchBf16OneTokenBytes : avx512_rows::kPrefetchBf16Bytes;
    return PartDots<S>(rows, k, x, ldx, tokens, out, ldo, [quads, k, ahead](int64_t r0, int) {
      return Bf16Quad<false>{quads + r0 * k, ahead};
    });
  }
  if (UsesFewTokenL2Prefetch(tokens)) {
    return Dots(rows, k, x, ldx, tokens, out, ldo, quad_at(std::true_type()));
  }
  Dots(rows, k, x, ldx, tokens, out, ldo, quad_at(std::false_type()));
}

template <int S>
void DotsInt8(const int8_t* quads, const float* scales, int64_t rows, int64_t k, const float* x,
              int64_t ldx, int64_t tokens, float* out, int64_t ldo) {
  auto quad_at = [&](int64_t r0, int) { return Int8Quad{quads + r0 * k, scales + r0}; };
  if (ReadsParts<S>(tokens)) return PartDots<S>(rows, k, x, ldx, tokens, out, ldo, quad_at);
  Dots(rows, k, x, ldx, tokens, out, ldo, quad_at);
}

void UnpackBf16(const uint16_t* quads, int64_t rows, int64_t k, int64_t cols, float* out,
                int64_t ldo) {
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const Bf16Quad<false> quad{quads + r0 * k};
    const int n = static_cast<int>(std::min<int64_t>(kRows, rows - r0));
    for (int64_t c = 0; c < cols; c += 16) {
      __m512 w[kRows];
      quad.Load(c, w);
      const __mmask16 m = cols - c >= 16 ? static_cast<__mmask16>(0xffff)
                                         : static_cast<__mmask16>((1u << (cols - c)) - 1);
      for (int r = 0; r < n; ++r) _mm512_mask_storeu_ps(out + (r0 + r) * ldo + c, m, w[r]);
    }
  }
}

void UnpackInt8(const int8_t* quads, const float* scales, int64_t rows, int64_t k, int64_t cols,
                float* out, int64_t ldo) {
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const Int8Quad quad{quads + r0 * k, scales + r0};
    const int n = static_cast<int>(std::min<int64_t>(kRows, rows - r0));
    for (int64_t c = 0; c < cols; c += 16) {
      __m512 w[kRows];
      quad.Load(c, w);
      const __mmask16 m = cols - c >= 16 ? static_cast<__mmask16>(0xffff)
                                         : static_cast<__mmask16>((1u << (cols - c)) - 1);
      for (int r = 0; r < n; ++r) {
        _mm512_mask_storeu_ps(out + (r0 + r) * ldo + c, m,
                              _mm512_mul_ps(_mm512_set1_ps(scales[r0 + r]), w[r]));
      }
    }
  }
}

// The set reading S weight streams per one-token dot (instantiated here, inside the target).
template <int S>
const RowDotKernels kAvx512Kernels = {"avx512",
                                      &DotsF32<S>,
                                      &DotsBf16<S>,
                                      &SiluMulAvx512,
                                      &UnpackBf16,
                                      &DotsInt8<S>,
                                      &UnpackInt8,
                                      /*quantize_activations=*/nullptr,
                                      /*dots_int8_quantized=*/nullptr,
                                      /*one_token_streams=*/S};
template const RowDotKernels kAvx512Kernels<1>;
template const RowDotKernels kAvx512Kernels<4>;

}  // namespace
}  // namespace moe

MOE_ISA_TARGET_END()

namespace moe {
const RowDotKernels* Avx512RowDotKernels(int one_token_streams) {
  static_assert(std::size(kOneTokenStreamChoices) == 2 && kOneTokenStreamChoices[1] == 4);
  __builtin_cpu_init();
  const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                         __builtin_cpu_supports("fma");
  if (!supported) return nullptr;
  return one_token_streams == 1   ? &kAvx512Kernels<1>
         : one_token_streams == 4 ? &kAvx512Kernels<4>
                                  : nullptr;
}

}  // namespace moe

#else  // not x86-64 GCC/Clang: portable only

namespace moe {
const RowDotKernels* Avx512RowDotKernels(int) { return nullptr; }
}  // namespace moe

#endif
