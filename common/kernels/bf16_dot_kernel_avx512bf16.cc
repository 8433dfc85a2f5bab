// AVX512-BF16 build of the bf16 dot kernels (bf16_dot_kernel.h). Every function in this file is
// compiled for AVX-512F/BW/VL/DQ + AVX512-BF16 through MOE_ISA_TARGET_BEGIN below (isa_target.h),
// and is only reached after Avx512Bf16DotKernels() checked the CPU at run time.
#include "common/kernels/bf16_dot_kernel.h"

#if defined(__x86_64__) && defined(__GNUC__)

#include <immintrin.h>

#include <algorithm>

#include "common/kernels/few_token_prefetch.h"
#include "common/kernels/isa_target.h"
#include "common/kernels/token_tiles.h"
#include "common/tensor/bf16_matrix.h"

MOE_ISA_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")

namespace moe {
namespace {

constexpr int kRows = 4;        // weight rows per tile (a Bf16Matrix quad)
constexpr int kMaxTokens = 12;  // 2 × 12 accumulators + 2 weights + x fit the 32 zmm registers
static_assert(Bf16Matrix::kQuadRows == kRows && Bf16Matrix::kChunkCols == 16);

// Software prefetch distance along the weights (quads follow each other, so past the end of one
// quad it warms the next): the streaming kernel's bf16 setting (row_dot_kernel_avx512.cc).
constexpr int64_t kPrefetchBytes = 2048;

// A quad's chunk holds rows a and b interleaved element by element (a0 b0 a1 b1 ... a15 b15);
// this word permutation makes it a0..a15 | b0..b15, so vdpbf16ps against x's 16 columns repeated
// in both halves sums row a in lanes 0-7 and row b in lanes 8-15.
__m512i Deinterleave() {
  alignas(64) uint16_t index[32];
  for (int j = 0; j < 16; ++j) {
    index[j] = static_cast<uint16_t>(2 * j);
    index[16 + j] = static_cast<uint16_t>(2 * j + 1);
  }
  return _mm512_load_si512(index);
}

inline __m512 Dp(__m512 acc, __m512i w, __m512i x) {
  return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh>(w), reinterpret_cast<__m512bh>(x));
}

// out[t * ldo + r] for r < num_rows, t < T, over k columns of one quad. `prefetch` on the first
// token tile of a quad only: later tiles find it in L1. With `far_l2` into L2 further ahead too
// (few_token_prefetch.h).
template <int T>
void Tile(const uint16_t* quad, int num_rows, int64_t k, const uint16_t* x, int64_t ldx, float* out,
          int64_t ldo, bool prefetch, bool far_l2) {
  const char* ahead = reinterpret_cast<const char*>(quad) + kPrefetchBytes;
  const __m512i perm = Deinterleave();
  __m512 acc01[T], acc23[T];
#pragma GCC unroll 12
  for (int t = 0; t < T; ++t) acc01[t] = acc23[t] = _mm512_setzero_ps();
  for (int64_t i = 0; i < k; i += 16) {
    if (prefetch) {
      _mm_prefetch(ahead, _MM_HINT_T0);
      _mm_prefetch(ahead + 64, _MM_HINT_T0);
      if (far_l2) {
        _mm_prefetch(ahead + kFewTokenL2PrefetchBytes, _MM_HINT_T1);
        _mm_prefetch(ahead + kFewTokenL2PrefetchBytes + 64, _MM_HINT_T1);
      }
      ahead += 128;
    }
    const __m512i w01 = _mm512_permutexvar_epi16(perm, _mm512_loadu_si512(quad + i * kRows));
    const __m512i w23 = _mm512_permutexvar_epi16(perm, _mm512_loadu_si512(quad + i * kRows + 32));
#pragma GCC unroll 12
    for (int t = 0; t < T; ++t) {
      const __m512i xv = _mm512_broadcast_i64x4(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + t * ldx + i)));
      acc01[t] = Dp(acc01[t], w01, xv);
      acc23[t] = Dp(acc23[t], w23, xv);
    }
  }
  const __mmask8 mask = static_cast<__mmask8>((1u << num_rows) - 1);
  for (int t = 0; t < T; ++t) {
    // [r0 0-3, r1 0-3 ...]: pairwise sums of each row's eight lanes, then the two 128-bit halves.
    const __m256 h01 =
        _mm256_hadd_ps(_mm512_castps512_ps256(acc01[t]), _mm512_extractf32x8_ps(acc01[t], 1));
    const __m256 h23 =
        _mm256_hadd_ps(_mm512_castps512_ps256(acc23[t]), _mm512_extractf32x8_ps(acc23[t], 1));
    const __m256 h = _mm256_hadd_ps(h01, h23);
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    _mm_mask_storeu_ps(out + t * ldo, mask, s);
  }
}

// Packed token rows are plain bf16 rows this far apart: the padded columns plus 32 values, so the
// rows of a token tile do not all fall into one L1 set when the width is a multiple of 2 KB.
int64_t PackedStride(int64_t k) { return k + 32; }

int64_t PackedValues(int64_t tokens, int64_t k) { return tokens * PackedStride(k); }

void Dots(const uint16_t* quads, int64_t rows, int64_t k, const uint16_t* packed,
          int64_t first_token, int64_t tokens, float* out, int64_t ldo) {
  const int64_t ldx = PackedStride(k);
  const uint16_t* x = packed + first_token * ldx;
  const bool far_l2 = UsesFewTokenL2Prefetch(tokens);
  ForEachRowGroupTile<kMaxTokens>(
      rows, kRows, tokens, [&](auto tile, int64_t r0, int n, int64_t t) {
        Tile<decltype(tile)::value>(quads + r0 * k, n, k, x + t * ldx, ldx, out + t * ldo + r0, ldo,
                                    t == 0, far_l2);
      });
}

void PackRow(const float* in, int64_t n, uint16_t* out) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256bh b = _mm512_cvtneps_pbh(_mm512_loadu_ps(in + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), reinterpret_cast<const __m256i&>(b));
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m256bh b = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, in + i));
    _mm256_mask_storeu_epi16(out + i, m, reinterpret_cast<const __m256i&>(b));
  }
}

void Pack(const float* in, int64_t ld, int64_t rows, int64_t n, int64_t first_token, int64_t col,
          int64_t k, uint16_t* packed) {
  for (int64_t r = 0; r < rows; ++r) {
    PackRow(in + r * ld, n, packed + (first_token + r) * PackedStride(k) + col);
  }
}

}  // namespace
}  // namespace moe

MOE_ISA_TARGET_END()

namespace moe {

const Bf16DotKernels* Avx512Bf16DotKernels() {
  // Ahead of the streaming kernel from 4 tokens per call on a 2-core Zen 5 (bench/README.md).
  static const Bf16DotKernels kernels = {
      "avx512bf16", /*rows_per_block=*/32, /*min_tokens=*/4, &PackedValues, &Pack, &Dots};
  __builtin_cpu_init();
  const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                         __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("fma");
  return supported ? &kernels : nullptr;
}

}  // namespace moe

#else  // not x86-64 GCC/Clang

namespace moe {
const Bf16DotKernels* Avx512Bf16DotKernels() { return nullptr; }
}  // namespace moe

#endif
