// AVX2 build of the row-dot kernels, for x86-64 CPUs with AVX2 and FMA but no AVX-512 (AMD Zen 1-3,
// Intel client cores, Haswell/Broadwell servers). Every function in this file is compiled for
// AVX2 + FMA through MOE_ISA_TARGET_BEGIN below (isa_target.h), and is only reached after
// Avx2RowDotKernels checked the CPU at run time.
//
// The same scheme as the AVX-512 build (row_dot_kernel_avx512.cc) on 8-lane registers: four rows
// at a time, each row read once per token tile of up to Rows::kMaxTokens tokens; the 16 ymm
// registers hold the 4 × kMaxTokens accumulators and the four rows' current 8 columns.
#include "common/kernels/row_dot_kernel.h"

#if defined(__x86_64__) && defined(__GNUC__)

#include <immintrin.h>

#include <algorithm>
#include <type_traits>

#include "common/kernels/few_token_prefetch.h"
#include "common/kernels/int8_matrix.h"
#include "common/kernels/isa_target.h"
#include "common/kernels/silu_mul_avx2.h"
#include "common/kernels/token_tiles.h"
#include "common/tensor/bf16_matrix.h"

MOE_ISA_TARGET_BEGIN("avx2,fma")

namespace moe {
namespace {

constexpr int kRows = 4;   // weight rows per tile (a Bf16Matrix quad)
constexpr int kLanes = 8;  // floats per ymm register
static_assert(Bf16Matrix::kQuadRows == kRows && Bf16Matrix::kChunkCols == 2 * kLanes);
static_assert(Int8Matrix::kQuadRows == kRows && Int8Matrix::kChunkCols == 2 * kLanes);

// How far ahead of the columns being read the one-stream reads (BF16 and int8 quads, float32 rows
// one at a time) prefetch into L1, in bytes of the stream. Measured on a 2-core Zen 3 (bench
// shape, M = 1 and 4, two alternating runs of 0, 1024 and 2048): bf16 at M = 1 took 1.12-1.13 ms
// with 1024 against 1.23-1.33 without; the rest within noise. The float32 four-row tile does
// without (F32Rows).
constexpr int64_t kPrefetchBytes = 1024;

inline void Prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }

inline float ReduceAdd(__m256 v) {
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
  return _mm_cvtss_f32(s4);
}

// Lanes [0, n) set, for masked loads and stores of the last n < 8 values of a row.
inline __m256i FirstLanes(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Four row-major float32 rows (the last ones repeated when fewer remain); with kFarL2 each row is
// prefetched kFewTokenL2PrefetchBytes ahead into L2 (few_token_prefetch.h). No prefetch into L1:
// four streams per thread are what the CPU's own prefetchers follow best. On a Zen 3 (family 25
// model 1, KVM, 32 MB L3) the 1 KB L1 prefetch the tile had cost about a sixth of the rate: two
// threads' one-token row dots over 1 GB read 39.5 / 40.8 GB/s with it and 46.8 / 44.9 without
// (`moe_kernels_bench --benchmark_filter=BM_ReadBandwidthRowDots`), summing passes over four
// streams per thread 44.4 with a prefetch and 52.8 without; `moe_decode_bench --shape=olmoe
// --rounds=1`, three alternating pairs, fp32 tokens/s at 1 token 170-205 -> 237-241, 2 tokens
// 326-364 -> 387-412, 4 tokens 566-599 -> 605-618, 8 the same.
template <bool kFarL2>
struct F32Rows {
  static constexpr bool kPadded = false;  // k need not be a multiple of 8
  // 12 accumulators, 3 rows and x in registers; GCC reads the fourth row from L1 in each of its
  // FMAs. Measured on a 2-core Zen 3 (bench shape, streaming path): 3 tokens per tile 47.7/43.4 ms
  // at M = 256 against 84.5/52.8 for 2, the same at M <= 8.
  static constexpr int kMaxTokens = 3;
  const float* w[kRows];

  void Load(int64_t i, __m256 (&v)[kRows]) const {
    for (int r = 0; r < kRows; ++r) v[r] = _mm256_loadu_ps(w[r] + i);
  }
  void LoadTail(int64_t i, __m256i mask, __m256 (&v)[kRows]) const {
    for (int r = 0; r < kRows; ++r) v[r] = _mm256_maskload_ps(w[r] + i, mask);
  }
  float Finish(int, float sum) const { return sum; }
  // With kFarL2, once per 64-byte line of each row (i a multiple of 8: every other step).
  void PrefetchAhead(int64_t i) const {
    if (!kFarL2 || i % 16 != 0) return;
    for (int r = 0; r < kRows; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(w[r] + i) + kFewTokenL2PrefetchBytes, _MM_HINT_T1);
    }
  }
};

// One Bf16Matrix quad. Columns [i, i + 8) of rows 0 and 1 are 32 contiguous bytes of 32-bit lanes
// (row 0 | row 1 << 16) inside chunk i / 16; rows 2 and 3 follow 64 bytes later.
struct Bf16Quad {
  static constexpr bool kPadded = true;
  // 8 accumulators + 4 rows + the two loaded vectors and the mask they are split with: with 3
  // tokens per tile M = 64/256 took 16.2/62.4 ms against 13.9/56.6 for 2 (same run as F32Rows).
  static constexpr int kMaxTokens = 2;
  const uint16_t* q;

  void Load(int64_t i, __m256 (&v)[kRows]) const {
    const uint16_t* lanes = q + i / 16 * 64 + i % 16 * 2;
    const __m256i high = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
    const __m256i rows01 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lanes));
    const __m256i rows23 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lanes + 32));
    v[0] = _mm256_castsi256_ps(_mm256_slli_epi32(rows01, 16));
    v[1] = _mm256_castsi256_ps(_mm256_and_si256(rows01, high));
    v[2] = _mm256_castsi256_ps(_mm256_slli_epi32(rows23, 16));
    v[3] = _mm256_castsi256_ps(_mm256_and_si256(rows23, high));
  }
  void LoadTail(int64_t, __m256i, __m256 (&)[kRows]) const {}  // never: k is padded
  float Finish(int, float sum) const { return sum; }
  // A quad is one stream, 64 bytes per step.
  void PrefetchAhead(int64_t i) const {
    Prefetch(reinterpret_cast<const char*>(q + i * kRows) + kPrefetchBytes);
  }
};

// One Int8Matrix quad and its four scales: chunk i / 16 is one 64-byte line, 16 values of each row
// in turn; each value is sign-extended to int32 and converted to float32 (exact).
struct Int8Quad {
  static constexpr bool kPadded = true;
  static constexpr int kMaxTokens = 2;  // as Bf16Quad
  const int8_t* q;
  const float* scales;

  void Load(int64_t i, __m256 (&v)[kRows]) const {
    const int8_t* line = q + i / 16 * 64 + i % 16;
    for (int r = 0; r < kRows; ++r) {
      const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(line + 16 * r));
      v[r] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
    }
  }
  void LoadTail(int64_t, __m256i, __m256 (&)[kRows]) const {}  // never: k is padded
  float Finish(int r, float sum) const { return scales[r] * sum; }
  // A quad is one stream, 64 bytes per 16 columns (every other step).
  void PrefetchAhead(int64_t i) const {
    if (i % 16 == 0) Prefetch(q + i * kRows + kPrefetchBytes);
  }
};

// out[t * ldo + r] for r < num_rows, t < T. `prefetch` on the first token tile of a group only:
// later tiles find the rows in L1/L2.
template <typename Rows, int T>
void Tile(const Rows& rows, int num_rows, int64_t k, const float* x, int64_t ldx, float* out,
          int64_t ldo, bool prefetch) {
  __m256 acc[kRows][T];
#pragma GCC unroll 4
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  }
  int64_t i = 0;
  for (; i + kLanes <= k; i += kLanes) {
    if (prefetch) rows.PrefetchAhead(i);
    __m256 w[kRows];
    rows.Load(i, w);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const __m256 xv = _mm256_loadu_ps(x + t * ldx + i);
#pragma GCC unroll 4
      for (int r = 0; r < kRows; ++r) acc[r][t] = _mm256_fmadd_ps(w[r], xv, acc[r][t]);
    }
  }
  if (!Rows::kPadded && i < k) {
    const __m256i mask = FirstLanes(k - i);
    __m256 w[kRows];
    rows.LoadTail(i, mask, w);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const __m256 xv = _mm256_maskload_ps(x + t * ldx + i, mask);
#pragma GCC unroll 4
      for (int r = 0; r < kRows; ++r) acc[r][t] = _mm256_fmadd_ps(w[r], xv, acc[r][t]);
    }
  }
  // Indices the compiler can see (loops unrolled, the row count a guard): the sums stay in
  // registers through the loop above instead of being stored to the stack at every step.
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) {
#pragma GCC unroll 4
    for (int r = 0; r < kRows; ++r) {
      if (r < num_rows) out[t * ldo + r] = rows.Finish(r, ReduceAdd(acc[r][t]));
    }
  }
}

// Every row group's token tiles (token_tiles.h), the group's rows made by group_at(first_row,
// rows); the tile size bound is the rows' own (Rows::kMaxTokens).
template <typename GroupAt>
void Dots(int64_t rows, int64_t k, const float* x, int64_t ldx, int64_t tokens, float* out,
          int64_t ldo, GroupAt group_at) {
  using Rows = decltype(group_at(0, 0));
  ForEachRowGroupTile<Rows::kMaxTokens>(
      rows, kRows, tokens, [&](auto tile, int64_t r0, int n, int64_t t) {
        Tile<Rows, decltype(tile)::value>(group_at(r0, n), n, k, x + t * ldx, ldx,
                                          out + t * ldo + r0, ldo, t == 0);
      });
}

// One token, one stream per thread (S = 1): each row on its own, one after the other, as the
// AVX-512 one-stream set does (row_streams_f32_avx512.cc). With S = 4 one token takes the four-row
// tile like more tokens do: four streams per thread.
void DotsF32OneStream(const float* w, int64_t ldw, int64_t rows, int64_t k, const float* x,
                      float* out) {
  for (int64_t r = 0; r < rows; ++r, w += ldw) {
    __m256 sum[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
    int64_t i = 0;
    for (; i + 4 * kLanes <= k; i += 4 * kLanes) {
      Prefetch(reinterpret_cast<const char*>(w + i) + kPrefetchBytes);
      Prefetch(reinterpret_cast<const char*>(w + i + 2 * kLanes) + kPrefetchBytes);
      for (int c = 0; c < 4; ++c) {
        sum[c] = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + kLanes * c),
                                 _mm256_loadu_ps(x + i + kLanes * c), sum[c]);
      }
    }
    for (; i + kLanes <= k; i += kLanes) {
      sum[0] = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), sum[0]);
    }
    if (i < k) {
      const __m256i mask = FirstLanes(k - i);
      sum[1] =
          _mm256_fmadd_ps(_mm256_maskload_ps(w + i, mask), _mm256_maskload_ps(x + i, mask), sum[1]);
    }
    out[r] = ReduceAdd(_mm256_add_ps(_mm256_add_ps(sum[0], sum[1]), _mm256_add_ps(sum[2], sum[3])));
  }
}

template <int S>
void DotsF32(const float* w, int64_t ldw, int64_t rows, int64_t k, const float* x, int64_t ldx,
             int64_t tokens, float* out, int64_t ldo) {
  if (S == 1 && tokens == 1) return DotsF32OneStream(w, ldw, rows, k, x, out);
  auto dots = [&](auto far_l2) {
    Dots(rows, k, x, ldx, tokens, out, ldo, [&](int64_t r0, int n) {
      F32Rows<decltype(far_l2)::value> group;
      for (int q = 0; q < kRows; ++q) group.w[q] = w + (r0 + std::min(q, n - 1)) * ldw;
      return group;
    });
  };
  if (UsesFewTokenL2Prefetch(tokens)) return dots(std::true_type());
  dots(std::false_type());
}

// One token, S quads side by side, each from its own part of the call's rows
// (ForEachRowPart): S contiguous runs per thread, each quad prefetched 1 KB ahead as alone.
// Neighbouring quads side by side (what the AVX-512 sets read before they took parts too) are not
// long runs: each stream jumps S quads ahead after every quad. Measured on a 2-core Zen 3 (family
// 25 model 1, KVM), a bf16 OLMoE layer at one token (`moe_decode_bench --shape=olmoe`, the variants
// taking turns within one process, 8-12 rounds, median weight GB/s): one quad at a time 26.3 / 26.3
// / 28.2, four parts 28.1 / 29.0 / 30.1 (27.8 / 28.3 without the prefetch), neighbouring quads 27.3
// in the third run; README "Quads from four parts at one token".
template <int S>
void DotsBf16(const uint16_t* quads, int64_t rows, int64_t k, const float* x, int64_t ldx,
              int64_t tokens, float* out, int64_t ldo) {
  auto quad_at = [&](int64_t r0) { return Bf16Quad{quads + r0 * k}; };
  if (S == 1 || tokens > 1) {
    return Dots(rows, k, x, ldx, tokens, out, ldo, [&](int64_t r0, int) { return quad_at(r0); });
  }
  ForEachRowPart<S>(
      rows, kRows,
      [&](const int64_t(&first_rows)[S]) {
        __m256 acc[S][kRows];
#pragma GCC unroll 4
        for (int s = 0; s < S; ++s) {
#pragma GCC unroll 4
          for (int r = 0; r < kRows; ++r) acc[s][r] = _mm256_setzero_ps();
        }
        Bf16Quad part[S];
        for (int s = 0; s < S; ++s) part[s] = quad_at(first_rows[s]);
        for (int64_t i = 0; i < k; i += kLanes) {  // k is padded to whole chunks
          const __m256 xv = _mm256_loadu_ps(x + i);
#pragma GCC unroll 4
          for (int s = 0; s < S; ++s) {
            part[s].PrefetchAhead(i);
            __m256 w[kRows];
            part[s].Load(i, w);
#pragma GCC unroll 4
            for (int r = 0; r < kRows; ++r) acc[s][r] = _mm256_fmadd_ps(w[r], xv, acc[s][r]);
          }
        }
#pragma GCC unroll 4
        for (int s = 0; s < S; ++s) {
#pragma GCC unroll 4
          for (int r = 0; r < kRows; ++r) {  // a guard, not a bound: the sums stay in registers
            if (first_rows[s] + r < rows) out[first_rows[s] + r] = ReduceAdd(acc[s][r]);
          }
        }
      },
      [&](int64_t r0, int n) {
        Tile<Bf16Quad, 1>(quad_at(r0), n, k, x, ldx, out + r0, ldo, /*prefetch=*/true);
      });
}

void DotsInt8(const int8_t* quads, const float* scales, int64_t rows, int64_t k, const float* x,
              int64_t ldx, int64_t tokens, float* out, int64_t ldo) {
  Dots(rows, k, x, ldx, tokens, out, ldo, [&](int64_t r0, int) {
    return Int8Quad{quads + r0 * k, scales + r0};
  });
}

// Rows [r0, r0 + 4) of `quad` as float32, each multiplied by scale(r): out[(r0 + r) * ldo + c].
template <typename Quad, typename Scale>
void UnpackQuad(const Quad& quad, int n, int64_t cols, Scale scale, float* out, int64_t ldo) {
  for (int64_t c = 0; c < cols; c += kLanes) {
    __m256 w[kRows];
    quad.Load(c, w);
    const __m256i mask = FirstLanes(std::min<int64_t>(kLanes, cols - c));
    for (int r = 0; r < n; ++r) {
      _mm256_maskstore_ps(out + r * ldo + c, mask, _mm256_mul_ps(_mm256_set1_ps(scale(r)), w[r]));
    }
  }
}

void UnpackBf16(const uint16_t* quads, int64_t rows, int64_t k, int64_t cols, float* out,
                int64_t ldo) {
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const int n = static_cast<int>(std::min<int64_t>(kRows, rows - r0));
    UnpackQuad(
        Bf16Quad{quads + r0 * k}, n, cols, [](int) { return 1.0f; }, out + r0 * ldo, ldo);
  }
}

void UnpackInt8(const int8_t* quads, const float* scales, int64_t rows, int64_t k, int64_t cols,
                float* out, int64_t ldo) {
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const int n = static_cast<int>(std::min<int64_t>(kRows, rows - r0));
    const float* quad_scales = scales + r0;
    UnpackQuad(
        Int8Quad{quads + r0 * k, quad_scales}, n, cols,
        [quad_scales](int r) { return quad_scales[r]; }, out + r0 * ldo, ldo);
  }
}

// The set reading S weight streams per one-token float32 or BF16 dot (instantiated here, inside
// the target). Int8 quads on float32 activations are one stream either way (the int16 set's int8
// dots take S: row_dot_kernel_avx2_int16.cc).
template <int S>
const RowDotKernels kAvx2Kernels = {"avx2",
                                    &DotsF32<S>,
                                    &DotsBf16<S>,
                                    &SiluMulAvx2,
                                    &UnpackBf16,
                                    &DotsInt8,
                                    &UnpackInt8,
                                    /*quantize_activations=*/nullptr,
                                    /*dots_int8_quantized=*/nullptr,
                                    /*one_token_streams=*/S};
template const RowDotKernels kAvx2Kernels<1>;
template const RowDotKernels kAvx2Kernels<4>;

}  // namespace
}  // namespace moe

MOE_ISA_TARGET_END()

namespace moe {
const RowDotKernels* Avx2RowDotKernels(int one_token_streams) {
  __builtin_cpu_init();
  const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (!supported) return nullptr;
  return one_token_streams == 1   ? &kAvx2Kernels<1>
         : one_token_streams == 4 ? &kAvx2Kernels<4>
                                  : nullptr;
}

}  // namespace moe

#else  // not x86-64 GCC/Clang: portable only

namespace moe {
const RowDotKernels* Avx2RowDotKernels(int) { return nullptr; }
}  // namespace moe

#endif
