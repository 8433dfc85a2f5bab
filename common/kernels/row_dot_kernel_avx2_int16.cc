// AVX2 build of the int8 row dots on int16 activations (RowDotKernels::quantize_activations,
// dots_int8_quantized): what row_dot_kernel_avx512vnni.cc does with vpdpwssd, done with vpmaddwd +
// vpaddd on CPUs with AVX2 but no AVX-512. Every function here is compiled for AVX2 + FMA through
// MOE_ISA_TARGET_BEGIN below (isa_target.h) and only reached after Avx2Int16RowDotKernels
// checked the CPU at run time.
//
// Why: widening int8 weights to float32 costs two instructions per 8 weights before the FMA, which
// bounds the one-token int8 FFN below the memory's rate on a Zen 3 core (measured: 0.62 of one
// core's read bandwidth, bf16 0.91). Here 16 columns of a row are sign-extended to int16 in one
// instruction and multiplied into int32 sums by one vpmaddwd (two products per lane) and one
// vpaddd, against activations rounded to int16: the same arithmetic, bit for bit, as the VNNI set.
// One token with four streams reads four quads side by side, one from each quarter of the call's
// rows (OneTokenParts).
#include "common/kernels/row_dot_kernel.h"

#if defined(__x86_64__) && defined(__GNUC__)

#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "common/kernels/int8_matrix.h"
#include "common/kernels/isa_target.h"
#include "common/kernels/token_tiles.h"

MOE_ISA_TARGET_BEGIN("avx2,fma")

namespace moe {
namespace {

constexpr int kRows = Int8Matrix::kQuadRows;
constexpr int kMaxTokens = 2;  // 4 × 2 int32 accumulators + 4 weight rows + x of 16 registers
constexpr int64_t kPrefetchBytes = 1024;
static_assert(kRows == 4 && Int8Matrix::kChunkCols == 16);

inline float ReduceMax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

void QuantizeActivations(const float* x, int64_t ldx, int64_t tokens, int64_t k, int16_t* xq,
                         int64_t ldq, float* x_scales, bool* finite) {
  const float levels = static_cast<float>(Int8ActivationLevels(k));
  const __m256 sign = _mm256_set1_ps(-0.0f);
  *finite = true;
  for (int64_t t = 0; t < tokens; ++t) {
    const float* row = x + t * ldx;
    int16_t* q = xq + t * ldq;
    __m256 max_abs = _mm256_setzero_ps();
    __m256 nan = _mm256_setzero_ps();  // vmaxps keeps its second operand when one is NaN
    for (int64_t i = 0; i < k; i += 8) {
      const __m256 v = _mm256_loadu_ps(row + i);
      max_abs = _mm256_max_ps(max_abs, _mm256_andnot_ps(sign, v));
      nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    const float amax = ReduceMax(max_abs);
    if (_mm256_movemask_ps(nan) != 0 || !std::isfinite(amax)) {
      *finite = false;
      return;
    }
    x_scales[t] = amax / levels;
    const __m256 inverse = _mm256_set1_ps(amax > 0 ? levels / amax : 0.0f);
    for (int64_t i = 0; i < k; i += 16) {
      // Rounded to nearest (MXCSR's default), |value| ≤ levels < 2^15: the narrowing is exact.
      const __m256i lo = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(row + i), inverse));
      const __m256i hi = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(row + i + 8), inverse));
      // packs works per 128-bit lane: [lo0-3 hi0-3 | lo4-7 hi4-7]; the permute puts them in order.
      const __m256i packed = _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xd8);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), packed);
    }
  }
}

// The sum of the 8 int32 lanes of `v`, exactly (in double).
inline double SumOfLanes(__m256i v) {
  const __m256d sum = _mm256_add_pd(_mm256_cvtepi32_pd(_mm256_castsi256_si128(v)),
                                    _mm256_cvtepi32_pd(_mm256_extracti128_si256(v, 1)));
  const __m128d pair = _mm_add_pd(_mm256_castpd256_pd128(sum), _mm256_extractf128_pd(sum, 1));
  return _mm_cvtsd_f64(_mm_add_sd(pair, _mm_unpackhi_pd(pair, pair)));
}

// out[t * ldo + r] for r < num_rows, t < T, from one quad of int8 rows and T tokens of int16
// activations. `prefetch` on the first token tile of a quad only.
template <int T>
void Tile(const int8_t* quad, const float* scales, int num_rows, int64_t k, const int16_t* xq,
          int64_t ldq, const float* x_scales, float* out, int64_t ldo, bool prefetch) {
  __m256i acc[kRows][T];
  for (int r = 0; r < kRows; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_si256();
  }
  for (int64_t i = 0; i < k; i += 16) {
    const int8_t* line = quad + i * kRows;  // 16 columns of each row in turn
    if (prefetch) _mm_prefetch(reinterpret_cast<const char*>(line) + kPrefetchBytes, _MM_HINT_T0);
    __m256i w[kRows];
    for (int r = 0; r < kRows; ++r) {
      w[r] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(line + 16 * r)));
    }
    for (int t = 0; t < T; ++t) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + t * ldq + i));
      for (int r = 0; r < kRows; ++r) {
        acc[r][t] = _mm256_add_epi32(acc[r][t], _mm256_madd_epi16(w[r], xv));
      }
    }
  }
  for (int t = 0; t < T; ++t) {
    // Each lane holds k / 8 products (Int8ActivationLevels keeps it inside int32); a row's 8 lanes
    // are summed in double, where the k products' total fits exactly.
    for (int r = 0; r < num_rows; ++r) {
      out[t * ldo + r] = scales[r] * x_scales[t] * static_cast<float>(SumOfLanes(acc[r][t]));
    }
  }
}

// One token, S quads side by side, each from its own part of the call's rows
// (ForEachRowPart): S contiguous runs per thread, without the software prefetch. Measured
// on a 2-core Zen 3 (family 25 model 1, KVM), an int8 OLMoE layer at one token (`moe_decode_bench
// --shape=olmoe`, the variants taking turns within one process, 8-12 rounds, median weight GB/s):
// one quad 21.1 / 24.8, four parts 23.2 / 27.4 without the prefetch and 21.7 / 24.5 with it, two
// parts 23.3.
template <int S>
void OneTokenParts(const int8_t* quads, const float* scales, int64_t rows, int64_t k,
                   const int16_t* xq, const float* x_scale, float* out) {
  ForEachRowPart<S>(
      rows, kRows,
      [&](const int64_t(&first_rows)[S]) {
        __m256i acc[S][kRows];
        for (int s = 0; s < S; ++s) {
          for (int r = 0; r < kRows; ++r) acc[s][r] = _mm256_setzero_si256();
        }
        for (int64_t i = 0; i < k; i += 16) {
          const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + i));
          for (int s = 0; s < S; ++s) {
            const int8_t* line = quads + first_rows[s] * k + i * kRows;
            for (int r = 0; r < kRows; ++r) {
              const __m256i w = _mm256_cvtepi8_epi16(
                  _mm_loadu_si128(reinterpret_cast<const __m128i*>(line + 16 * r)));
              acc[s][r] = _mm256_add_epi32(acc[s][r], _mm256_madd_epi16(w, xv));
            }
          }
        }
        for (int s = 0; s < S; ++s) {
          for (int r = 0; r < kRows && first_rows[s] + r < rows; ++r) {
            const int64_t row = first_rows[s] + r;
            out[row] = scales[row] * *x_scale * static_cast<float>(SumOfLanes(acc[s][r]));
          }
        }
      },
      [&](int64_t r0, int n) {
        Tile<1>(quads + r0 * k, scales + r0, n, k, xq, 0, x_scale, out + r0, 0, true);
      });
}

// S > 1 streams: one token reads S parts side by side (OneTokenParts); more tokens, and one with S
// = 1, take the quads one at a time.
template <int S>
void DotsInt8Quantized(const int8_t* quads, const float* scales, int64_t rows, int64_t k,
                       const int16_t* xq, int64_t ldq, const float* x_scales, int64_t tokens,
                       float* out, int64_t ldo) {
  if (S > 1 && tokens == 1) return OneTokenParts<S>(quads, scales, rows, k, xq, x_scales, out);
  ForEachRowGroupTile<kMaxTokens>(
      rows, kRows, tokens, [&](auto tile, int64_t r0, int n, int64_t t) {
        Tile<decltype(tile)::value>(quads + r0 * k, scales + r0, n, k, xq + t * ldq, ldq,
                                    x_scales + t, out + t * ldo + r0, ldo, t == 0);
      });
}

// The AVX2 set of S streams with these int8 dots (instantiated here, inside the target).
template <int S>
RowDotKernels WithInt16Dots(const RowDotKernels& avx2) {
  RowDotKernels set = avx2;
  set.name = "avx2-int16";
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

const RowDotKernels* Avx2Int16RowDotKernels(int one_token_streams) {
  if (Avx2RowDotKernels(one_token_streams) == nullptr) return nullptr;
  static const RowDotKernels one_stream = WithInt16Dots<1>(*Avx2RowDotKernels(1));
  static const RowDotKernels four_streams = WithInt16Dots<4>(*Avx2RowDotKernels(4));
  return one_token_streams == 1 ? &one_stream : &four_streams;
}

}  // namespace moe

#else  // not x86-64 GCC/Clang

namespace moe {
const RowDotKernels* Avx2Int16RowDotKernels(int) { return nullptr; }
}  // namespace moe

#endif
