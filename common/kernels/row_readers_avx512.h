// The weight readers of the AVX-512 row dots (row_dot_kernel_avx512.cc): each loads 16 columns of
// four weight rows into float32 registers (widening bf16 and int8 exactly) and prefetches along
// them, for the tiles to multiply. F32Rows reads four row-major float32 rows, Bf16Quad one
// Bf16Matrix quad, Int8Quad one Int8Matrix quad and its scales. Internal to that file: include it
// after MOE_ISA_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,fma") (isa_target.h), so that its
// functions are compiled for AVX-512 and reached only after the run-time CPU check.
#ifndef MOE_COMMON_KERNELS_ROW_READERS_AVX512_H_
#define MOE_COMMON_KERNELS_ROW_READERS_AVX512_H_

#include <immintrin.h>

#include <cstdint>

#include "common/kernels/few_token_prefetch.h"
#include "common/kernels/int8_matrix.h"
#include "common/kernels/row_streams_f32_avx512.h"
#include "common/tensor/bf16_matrix.h"

namespace moe::avx512_rows {

constexpr int kRows = 4;  // weight rows per tile (a Bf16Matrix quad)
static_assert(Bf16Matrix::kQuadRows == kRows && Bf16Matrix::kChunkCols == 16);
static_assert(Int8Matrix::kQuadRows == kRows && Int8Matrix::kChunkCols == 16);

// Software prefetch distances of the quads (float32 rows: kPrefetchF32Bytes). One stream per
// thread at one token (a Zen 4's default; OLMoE-shape bf16 experts, the distances taking turns in
// one moe_decode_bench process, 10 rounds): 1 KB 5% slower than 2 KB, 4 KB within the noise.
constexpr int64_t kPrefetchBf16Bytes = 2048;  // a quad is one stream
// ... and for one token's four parts (the four-stream set's one-token dots, row_dot_kernel.h). On
// the 2-core paravirtualised Zen 5 (family 26 model 2), one token through the 64 experts of an
// OLMoE-shape layer in bf16, the distances taking turns in one process (a throwaway harness, each
// timed pass after an untimed one, median weight GB/s): with each thread computing whole experts,
// as the layer in process does at one token, 2048 B 64.6, 65.2 and 65.4 against 1024 B 71.9, 70.8
// and 70.3 (20, 16 and 16 rounds, the last in steps of 8 experts; 768 B 71.0, 1280 B 69.4, 1536 B
// 66.7, 4096 B 56.6, 512 B 68.6, 0 B 67.0, an added L2 prefetch 16 KB ahead 51.1); with each
// expert split over both threads, as moe_decode_bench does, 59.1 against 65.0 (10 rounds) and 57.9
// against 58.6 (20). A Qwen3-shape layer (128 experts of width 768), 16 rounds: 52.0 against 55.3
// in steps of 8 whole experts per thread, 56.4 against 61.7 split. Two and three tokens' two parts
// keep 2048 B (50.0 and 48.9 against 46.9 and 45.6 with 1024 B, 10 rounds). On an Intel Xeon with
// AMX (family 6 model 167), whose default is four streams too, 1024 B and 2048 B ran alike (OLMoE
// 1024 ÷ 2048 time 0.98 and 1.01, Qwen3 0.99; 6-10 rounds, float32 and int8 controls 0.99-1.01).
constexpr int64_t kPrefetchBf16OneTokenBytes = 1024;
constexpr int64_t kPrefetchInt8Bytes = 1024;  // a quad is one stream

inline void Prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }
inline void PrefetchL2(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T1); }

// Four row-major float32 rows (the last ones repeated when fewer remain); with kFarL2 each row is
// also prefetched kFewTokenL2PrefetchBytes ahead into L2 (few_token_prefetch.h).
template <bool kFarL2>
struct F32Rows {
  static constexpr bool kPadded = false;  // k need not be a multiple of 16
  const float* w[kRows];
  int64_t k;
  int64_t next;  // elements from a row to the same row of the next group

  void Load(int64_t i, __m512 (&v)[kRows]) const {
    for (int r = 0; r < kRows; ++r) v[r] = _mm512_loadu_ps(w[r] + i);
  }
  float Finish(int, float sum) const { return sum; }
  void LoadTail(int64_t i, __mmask16 m, __m512 (&v)[kRows]) const {
    for (int r = 0; r < kRows; ++r) v[r] = _mm512_maskz_loadu_ps(m, w[r] + i);
  }
  // Prefetches run kPrefetchF32Bytes ahead along each row and, past its end, on into the same row
  // of the next group, so the next group's rows start warm.
  struct Cursor {
    int64_t base;  // elements from w[r] to the row being prefetched
    int64_t off;   // column within that row
  };
  Cursor StartPrefetch() const {
    const int64_t ahead = kPrefetchF32Bytes / static_cast<int64_t>(sizeof(float));
    return {ahead / k * next, ahead % k};
  }
  void Prefetch16(Cursor& c) const {
    for (int r = 0; r < kRows; ++r) {
      const char* line = reinterpret_cast<const char*>(w[r] + c.base + c.off);
      Prefetch(line);
      if constexpr (kFarL2) PrefetchL2(line + kFewTokenL2PrefetchBytes);
    }
    c.off += 16;
    if (c.off >= k) {
      c.off -= k;
      c.base += next;
    }
  }
};

// One Bf16Matrix quad: chunk i/16 is 128 contiguous bytes, quads follow each other. With kFarL2
// its lines are also prefetched kFewTokenL2PrefetchBytes ahead into L2 (few_token_prefetch.h).
template <bool kFarL2>
struct Bf16Quad {
  static constexpr bool kPadded = true;
  const uint16_t* q;
  int64_t prefetch_bytes = kPrefetchBf16Bytes;  // how far ahead Prefetch16 reads into L1

  void Load(int64_t i, __m512 (&v)[kRows]) const {
    const __m512i high = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
    const __m512i rows01 = _mm512_loadu_si512(q + i * kRows);
    const __m512i rows23 = _mm512_loadu_si512(q + i * kRows + 32);
    v[0] = _mm512_castsi512_ps(_mm512_slli_epi32(rows01, 16));
    v[1] = _mm512_castsi512_ps(_mm512_and_si512(rows01, high));
    v[2] = _mm512_castsi512_ps(_mm512_slli_epi32(rows23, 16));
    v[3] = _mm512_castsi512_ps(_mm512_and_si512(rows23, high));
  }
  float Finish(int, float sum) const { return sum; }
  void LoadTail(int64_t, __mmask16, __m512 (&)[kRows]) const {}  // never: k is padded
  using Cursor = const char*;
  Cursor StartPrefetch() const { return reinterpret_cast<const char*>(q) + prefetch_bytes; }
  void Prefetch16(Cursor& p) const {
    Prefetch(p);
    Prefetch(p + 64);
    if constexpr (kFarL2) {
      PrefetchL2(p + kFewTokenL2PrefetchBytes);
      PrefetchL2(p + kFewTokenL2PrefetchBytes + 64);
    }
    p += 128;
  }
};

// One Int8Matrix quad and its four scales: chunk i/16 is one 64-byte line, 16 values of each row
// in turn; each is sign-extended to int32 and converted to float32 (exact).
struct Int8Quad {
  static constexpr bool kPadded = true;
  const int8_t* q;
  const float* scales;

  void Load(int64_t i, __m512 (&v)[kRows]) const {
    const int8_t* line = q + i * kRows;
    for (int r = 0; r < kRows; ++r) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(line + 16 * r));
      v[r] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes));
    }
  }
  void LoadTail(int64_t, __mmask16, __m512 (&)[kRows]) const {}  // never: k is padded
  float Finish(int r, float sum) const { return scales[r] * sum; }
  using Cursor = const char*;
  Cursor StartPrefetch() const { return reinterpret_cast<const char*>(q) + kPrefetchInt8Bytes; }
  void Prefetch16(Cursor& p) const {
    Prefetch(p);
    p += 64;
  }
};

}  // namespace moe::avx512_rows

#endif  // MOE_COMMON_KERNELS_ROW_READERS_AVX512_H_
