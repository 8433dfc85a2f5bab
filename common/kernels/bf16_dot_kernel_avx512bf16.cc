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
// Where threads read several weight streams at once (one_token_streams 4, row_dot_kernel.h: Zen 5,
// Intel), calls of up to kMaxPartTokens tokens read kParts quads side by side, one from each of
// kParts parts of the call's rows (ForEachRowPart, token_tiles.h): kParts streams per thread,
// without the far L2 prefetch. 2 × 2 × 6 accumulators + 4 weights + x fit the registers. Measured
// on the 2-core paravirtualised Zen 5 (`moe_decode_bench --shape=olmoe|qwen3`, bf16 weights, the
// readings taking turns in one process, 8 rounds, median weight GB/s, OLMoE / Qwen3): 4 tokens one
// quad at a time with the far L2 prefetch (before) 45.5 / 32.9, without it 45.6 / 32.3, two parts
// 54.7 / 37.0, three parts 53.6 / 35.8; 5 tokens 44.8 / 32.7 → two parts 52.4 / 36.6; 6 tokens
// 43.3 / 32.1 → 50.4 / 35.8; two parts with the far prefetch 6-14% behind two without. Where a
// thread reads one stream (one_token_streams 1: Zen 4), every call reads one quad at a time with
// the far L2 prefetch: on a 2-core Zen 4 (family 25 model 17, KVM; `moe_decode_bench
// --shape=olmoe|qwen3 --tokens=4,5,6 --rounds=1`, two threads, the two taking turns in separate
// processes, two pairs each, tokens/s) two parts ran OLMoE 4 / 5 / 6 tokens at 894-1 023 /
// 1 159-1 182 / 1 228-1 399 against one quad's 1 133-1 288 / 1 618-1 709 / 1 945-2 072, Qwen3 at
// 1 437-1 470 / 1 633-1 805 / 1 745-1 845 against 1 509-1 693 / 1 930-2 063 / 2 247-2 474
// (README "BF16 weights at 4-6 tokens on a Zen 4").
constexpr int kParts = 2;
constexpr int kMaxPartTokens = 6;
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

// out[t * ldo + row] for t < T and the rows of Q quads side by side (quad q holds rows
// first_rows[q] to first_rows[q] + 3; those below `rows` are written), over k columns. `prefetch`
// on the first token tile of a quad only: later tiles find it in L1. With `far_l2` into L2 further
// ahead too (few_token_prefetch.h).
template <int Q, int T>
void Tile(const uint16_t* quads, const int64_t (&first_rows)[Q], int64_t rows, int64_t k,
          const uint16_t* x, int64_t ldx, float* out, int64_t ldo, bool prefetch, bool far_l2) {
  const __m512i perm = Deinterleave();
  const uint16_t* quad[Q];
  const char* ahead[Q];
  __m512 acc01[Q][T], acc23[Q][T];
#pragma GCC unroll 4
  for (int q = 0; q < Q; ++q) {
    quad[q] = quads + first_rows[q] * k;
    ahead[q] = reinterpret_cast<const char*>(quad[q]) + kPrefetchBytes;
#pragma GCC unroll 12
    for (int t = 0; t < T; ++t) acc01[q][t] = acc23[q][t] = _mm512_setzero_ps();
  }
  for (int64_t i = 0; i < k; i += 16) {
    __m512i w01[Q], w23[Q];
#pragma GCC unroll 4
    for (int q = 0; q < Q; ++q) {
      if (prefetch) {
        _mm_prefetch(ahead[q], _MM_HINT_T0);
        _mm_prefetch(ahead[q] + 64, _MM_HINT_T0);
        if (far_l2) {
          _mm_prefetch(ahead[q] + kFewTokenL2PrefetchBytes, _MM_HINT_T1);
          _mm_prefetch(ahead[q] + kFewTokenL2PrefetchBytes + 64, _MM_HINT_T1);
        }
        ahead[q] += 128;
      }
      w01[q] = _mm512_permutexvar_epi16(perm, _mm512_loadu_si512(quad[q] + i * kRows));
      w23[q] = _mm512_permutexvar_epi16(perm, _mm512_loadu_si512(quad[q] + i * kRows + 32));
    }
#pragma GCC unroll 12
    for (int t = 0; t < T; ++t) {
      const __m512i xv = _mm512_broadcast_i64x4(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + t * ldx + i)));
#pragma GCC unroll 4
      for (int q = 0; q < Q; ++q) {
        acc01[q][t] = Dp(acc01[q][t], w01[q], xv);
        acc23[q][t] = Dp(acc23[q][t], w23[q], xv);
      }
    }
  }
  for (int q = 0; q < Q; ++q) {
    const int64_t left = rows - first_rows[q];
    const __mmask8 mask = static_cast<__mmask8>((1u << (left < kRows ? left : kRows)) - 1);
    for (int t = 0; t < T; ++t) {
      // [r0 0-3, r1 0-3 ...]: pairwise sums of each row's eight lanes, then the two 128-bit halves.
      const __m256 h01 = _mm256_hadd_ps(_mm512_castps512_ps256(acc01[q][t]),
                                        _mm512_extractf32x8_ps(acc01[q][t], 1));
      const __m256 h23 = _mm256_hadd_ps(_mm512_castps512_ps256(acc23[q][t]),
                                        _mm512_extractf32x8_ps(acc23[q][t], 1));
      const __m256 h = _mm256_hadd_ps(h01, h23);
      const __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
      _mm_mask_storeu_ps(out + t * ldo + first_rows[q], mask, s);
    }
  }
}

// Packed token rows are plain bf16 rows this far apart: the padded columns plus 32 values, so the
// rows of a token tile do not all fall into one L1 set when the width is a multiple of 2 KB.
int64_t PackedStride(int64_t k) { return k + 32; }

int64_t PackedValues(int64_t tokens, int64_t k) { return tokens * PackedStride(k); }

template <bool kReadsParts>
void Dots(const uint16_t* quads, int64_t rows, int64_t k, const uint16_t* packed,
          int64_t first_token, int64_t tokens, float* out, int64_t ldo) {
  const int64_t ldx = PackedStride(k);
  const uint16_t* x = packed + first_token * ldx;
  if (kReadsParts && tokens <= kMaxPartTokens) {
    return WithTokenCount<kMaxPartTokens>(tokens, [&](auto tile) {
      constexpr int T = decltype(tile)::value;
      ForEachRowPart<kParts>(
          rows, kRows,
          [&](const int64_t(&first_rows)[kParts]) {
            Tile<kParts, T>(quads, first_rows, rows, k, x, ldx, out, ldo, true, false);
          },
          [&](int64_t r0, int) {
            const int64_t first_row[1] = {r0};
            Tile<1, T>(quads, first_row, rows, k, x, ldx, out, ldo, true, false);
          });
    });
  }
  const bool far_l2 = UsesFewTokenL2Prefetch(tokens);
  ForEachRowGroupTile<kMaxTokens>(rows, kRows, tokens, [&](auto tile, int64_t r0, int, int64_t t) {
    const int64_t first_row[1] = {r0};
    Tile<1, decltype(tile)::value>(quads, first_row, rows, k, x + t * ldx, ldx, out + t * ldo, ldo,
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

const Bf16DotKernels* Avx512Bf16DotKernels(int one_token_streams) {
  auto set_reading = [](decltype(Bf16DotKernels::dots) dots) {
    Bf16DotKernels kernels{};  // no int8 weights
    kernels.name = "avx512bf16";
    kernels.rows_per_block = 32;
    // Ahead of the streaming kernel from 4 tokens per call on a 2-core Zen 5 (bench/README.md).
    kernels.min_tokens = 4;
    kernels.packed_values = &PackedValues;
    kernels.pack = &Pack;
    kernels.dots = dots;
    return kernels;
  };
  static const Bf16DotKernels one_stream = set_reading(&Dots</*kReadsParts=*/false>);
  static const Bf16DotKernels parts = set_reading(&Dots</*kReadsParts=*/true>);
  __builtin_cpu_init();
  const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                         __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("fma");
  const int streams = one_token_streams == 0 ? ProcessOneTokenStreams() : one_token_streams;
  if (!supported) return nullptr;
  return streams == 1 ? &one_stream : streams == 4 ? &parts : nullptr;
}

}  // namespace moe

#else  // not x86-64 GCC/Clang

namespace moe {
const Bf16DotKernels* Avx512Bf16DotKernels(int) { return nullptr; }
}  // namespace moe

#endif

namespace moe {

bool Avx512Bf16DotsPayOff(const CpuIdentity& cpu) { return cpu.amd; }

const Bf16DotKernels* DefaultAvx512Bf16DotKernels() {
  static const Bf16DotKernels* const kernels =
      Avx512Bf16DotsPayOff(ThisCpu()) ? Avx512Bf16DotKernels() : nullptr;
  return kernels;
}

}  // namespace moe
