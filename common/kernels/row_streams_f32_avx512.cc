// AVX-512 build of the float32 row streams (row_streams_f32_avx512.h), compiled for
// AVX-512F/BW/VL/DQ + FMA through MOE_ISA_TARGET_BEGIN (isa_target.h).
#include "common/kernels/row_streams_f32_avx512.h"

#if defined(__x86_64__) && defined(__GNUC__)

#include <immintrin.h>

#include <type_traits>
#include <utility>

#include "common/kernels/isa_target.h"
#include "common/kernels/token_tiles.h"

MOE_ISA_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,fma")

namespace moe {
namespace {

inline void Prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }

// One token: each row on its own, one after the other, four sums per row. Rows lie back to back,
// so a thread reads one stream instead of a tile's four rows 4·ldw bytes apart. Measured on a Zen
// 4 (moe_decode_bench --shape=olmoe, fp32 at 1 token, alternating with the tile): one core
// 1.35-1.42× (README "Real layer shapes").
void DotsF32OneToken(const float* w, int64_t ldw, int64_t rows, int64_t k, const float* x,
                     float* out) {
  const int64_t ahead = kPrefetchF32Bytes / static_cast<int64_t>(sizeof(float));
  for (int64_t r = 0; r < rows; ++r, w += ldw) {
    __m512 sum[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                     _mm512_setzero_ps()};
    int64_t i = 0;
    for (; i + 64 <= k; i += 64) {
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) {
        Prefetch(w + i + ahead + 16 * c);
        sum[c] = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16 * c), _mm512_loadu_ps(x + i + 16 * c),
                                 sum[c]);
      }
    }
    for (; i + 16 <= k; i += 16) {
      sum[0] = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), sum[0]);
    }
    if (i < k) {
      const __mmask16 m = static_cast<__mmask16>((1u << (k - i)) - 1);
      sum[1] =
          _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + i), _mm512_maskz_loadu_ps(m, x + i), sum[1]);
    }
    out[r] = _mm512_reduce_add_ps(
        _mm512_add_ps(_mm512_add_ps(sum[0], sum[1]), _mm512_add_ps(sum[2], sum[3])));
  }
}

// A few tokens (up to kMaxOneStreamTokens), one row at a time: a thread reads one stream, as
// DotsF32OneToken does, while the tokens' x stay in L1; two sums per token. Against the four-row
// tile (four streams 4·ldw bytes apart) this spends a load of x on every FMA, which a core with
// one 512-bit load per cycle (Zen 4) still issues faster than DRAM delivers one stream.
template <int T>
void FewTokensF32(const float* w, int64_t ldw, int64_t rows, int64_t k, const float* x, int64_t ldx,
                  float* out, int64_t ldo) {
  const int64_t ahead = kPrefetchF32Bytes / static_cast<int64_t>(sizeof(float));
  for (int64_t r = 0; r < rows; ++r, w += ldw) {
    __m512 sum[T][2];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) sum[t][0] = sum[t][1] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= k; i += 32) {
      Prefetch(w + i + ahead);
      Prefetch(w + i + ahead + 16);
      const __m512 w0 = _mm512_loadu_ps(w + i), w1 = _mm512_loadu_ps(w + i + 16);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        sum[t][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + t * ldx + i), sum[t][0]);
        sum[t][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + t * ldx + i + 16), sum[t][1]);
      }
    }
    for (; i < k; i += 16) {
      const __mmask16 m = k - i >= 16 ? static_cast<__mmask16>(0xffff)
                                      : static_cast<__mmask16>((1u << (k - i)) - 1);
      const __m512 wv = _mm512_maskz_loadu_ps(m, w + i);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        sum[t][0] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x + t * ldx + i), sum[t][0]);
      }
    }
    for (int t = 0; t < T; ++t) {
      out[t * ldo + r] = _mm512_reduce_add_ps(_mm512_add_ps(sum[t][0], sum[t][1]));
    }
  }
}

// T tokens (1 to kPartTileTokensF32), R rows side by side, row first_rows[r] of `w` in each (one
// from each of R parts of the call's rows, ForEachRowPart): R long read streams per thread, x from
// L1. One token keeps two sums per row, 32 columns a step (the one-token dots of
// OneTokenDotsF32Avx512); more tokens one sum per row and token, 16 columns a step. Every loop over
// r and t is unrolled whole: with an index the compiler cannot see (the last loops not unrolled),
// GCC 12 kept the sums on the stack and stored all R × T of them at every step of the main loop.
template <int R, int T>
void FewTokenRowsF32(const float* w, int64_t ldw, const int64_t (&first_rows)[R], int64_t k,
                     const float* x, int64_t ldx, float* out, int64_t ldo) {
  constexpr int kSums = T == 1 ? 2 : 1;  // per row and token
  const int64_t ahead = kPrefetchF32Bytes / static_cast<int64_t>(sizeof(float));
  const float* rows[R];
  __m512 sum[R][T][kSums];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    rows[r] = w + first_rows[r] * ldw;
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
#pragma GCC unroll 2
      for (int s = 0; s < kSums; ++s) sum[r][t][s] = _mm512_setzero_ps();
    }
  }
  int64_t i = 0;
  if constexpr (kSums == 2) {
    for (; i + 32 <= k; i += 32) {
      const __m512 x0 = _mm512_loadu_ps(x + i), x1 = _mm512_loadu_ps(x + i + 16);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const float* row = rows[r] + i;
        Prefetch(row + ahead);
        Prefetch(row + ahead + 16);
        sum[r][0][0] = _mm512_fmadd_ps(_mm512_loadu_ps(row), x0, sum[r][0][0]);
        sum[r][0][1] = _mm512_fmadd_ps(_mm512_loadu_ps(row + 16), x1, sum[r][0][1]);
      }
    }
  }
  for (; i < k; i += 16) {
    const __mmask16 m =
        k - i >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (k - i)) - 1);
    __m512 xv[T];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) xv[t] = _mm512_maskz_loadu_ps(m, x + t * ldx + i);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      if constexpr (kSums == 1) Prefetch(rows[r] + i + ahead);
      const __m512 wv = _mm512_maskz_loadu_ps(m, rows[r] + i);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) sum[r][t][0] = _mm512_fmadd_ps(wv, xv[t], sum[r][t][0]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      __m512 total = sum[r][t][0];
      if constexpr (kSums == 2) total = _mm512_add_ps(total, sum[r][t][1]);
      out[t * ldo + first_rows[r]] = _mm512_reduce_add_ps(total);
    }
  }
}

}  // namespace

void PartsFewTokenDotsF32Avx512(const float* w, int64_t ldw, int64_t rows, int64_t k,
                                const float* x, int64_t ldx, int64_t tokens, float* out,
                                int64_t ldo) {
  auto tiles = [&](const auto& first_rows) {
    constexpr int R = std::extent_v<std::remove_reference_t<decltype(first_rows)>>;
    ForEachTokenTile(tokens, kPartTileTokensF32, [&](int64_t t0, int64_t n) {
      WithTokenCount<kPartTileTokensF32>(n, [&](auto tile) {
        FewTokenRowsF32<R, decltype(tile)::value>(w, ldw, first_rows, k, x + t0 * ldx, ldx,
                                                  out + t0 * ldo, ldo);
      });
    });
  };
  ForEachRowPart<4>(
      rows, 1, [&](const int64_t(&first_rows)[4]) { tiles(first_rows); },
      [&](int64_t r, int) {
        const int64_t first_row[1] = {r};
        tiles(first_row);
      });
}

void OneTokenDotsF32Avx512(int streams, const float* w, int64_t ldw, int64_t rows, int64_t k,
                           const float* x, float* out) {
  if (streams != 4) return DotsF32OneToken(w, ldw, rows, k, x, out);
  ForEachRowPart<4>(
      rows, 1,
      [&](const int64_t(&first_rows)[4]) {
        FewTokenRowsF32<4, 1>(w, ldw, first_rows, k, x, k, out, rows);
      },
      [&](int64_t r, int) { DotsF32OneToken(w + r * ldw, ldw, 1, k, x, out + r); });
}

void FewTokenDotsF32Avx512(const float* w, int64_t ldw, int64_t rows, int64_t k, const float* x,
                           int64_t ldx, int64_t tokens, float* out, int64_t ldo) {
  auto few = [&](auto t) { FewTokensF32<decltype(t)::value>(w, ldw, rows, k, x, ldx, out, ldo); };
  token_tiles_internal::WithTileSize(tokens, few,
                                     std::make_integer_sequence<int, kMaxOneStreamTokens>());
}

}  // namespace moe

MOE_ISA_TARGET_END()

#endif
