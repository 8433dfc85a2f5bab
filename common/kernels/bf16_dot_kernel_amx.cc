// AMX build of the in-place bf16 dot kernels, "amx-bf16" (bf16_dot_kernel.h), and the check both
// AMX-BF16 kernels share. Every kernel function in this file is compiled for AMX-TILE + AMX-BF16
// (and AVX512-BF16 for packing) through MOE_ISA_TARGET_BEGIN below (isa_target.h; not a global
// -march flag), and is only reached after AmxBf16DotKernels() checked the CPU at run time and
// obtained the tile state from Linux.
//
// Tile registers, for a pass of one or two token groups: C0..C3 (tmm0-3) hold float32 sums for
// 16 quads × (2 groups × 8 tokens × 2 rows); A0/A1 (tmm4-5) the quads' rows a,b / c,d for one
// 16-column chunk; B0/B1 (tmm6-7) one chunk of two token groups. Each dots call loads its tile
// configuration and releases the tiles on return, so no thread keeps the 8 KB of tile state past
// a call.
#include "common/kernels/bf16_dot_kernel.h"

#if defined(__x86_64__) && defined(__GNUC__)

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "common/kernels/amx_tiles.h"
#include "common/kernels/isa_target.h"
#include "common/tensor/bf16_matrix.h"

MOE_ISA_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16")

namespace moe {
namespace {

constexpr int kQuadsPerTile = 16;     // rows of a left tile: one per quad
constexpr int kTokensPerGroup = 8;    // a right tile has 16 columns: two per token
constexpr int kChunk = 16;            // weight columns per tile (one Bf16Matrix chunk)
constexpr int64_t kTileValues = 512;  // uint16 values of a right tile: 16 rows × 64 bytes
static_assert(Bf16Matrix::kQuadRows == 4 && Bf16Matrix::kChunkCols == kChunk);
static_assert(kBf16DotTokenAlign % kTokensPerGroup == 0);
// How far ahead of the tile loads the first pass over a block warms its quads' rows, in chunks
// (128 bytes of each quad).
constexpr int64_t kPrefetchChunks = 4;

// Sum and weight tiles have one row per quad, token tiles (tmm6-7) 16: one per column of the chunk.
AmxTileConfig ConfigFor(int quads) {
  AmxTileConfig config;
  for (int t = 0; t < 8; ++t) config.Set(t, t < 6 ? quads : 16, 64);
  return config;
}

// Packed layout: token group g (tokens 8g..8g+7), chunk c is the right tile at
// packed + (g · chunks + c) · kTileValues; column j of token 8g + t is row j % 16 of it, words
// 4t (paired with a zero: row a of a quad) and 4t + 3 (after a zero: row b).
int64_t PackedValues(int64_t tokens, int64_t k) {
  return (tokens + kTokensPerGroup - 1) / kTokensPerGroup * (k / kChunk) * kTileValues;
}

// Chunk by chunk, token by token: the 8 tokens of a group fill a right tile's rows while it is
// in L1.
void Pack(const float* in, int64_t ld, int64_t rows, int64_t n, int64_t first_token, int64_t col,
          int64_t k, uint16_t* packed) {
  for (int64_t i = 0; i < n;) {
    const int64_t j = col + i;
    const int64_t first = j % kChunk, count = std::min<int64_t>(kChunk - first, n - i);
    const __mmask16 mask = static_cast<__mmask16>(((1u << count) - 1) << first);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t token = first_token + r;
      uint16_t* tile = packed +
                       (token / kTokensPerGroup * (k / kChunk) + j / kChunk) * kTileValues +
                       token % kTokensPerGroup * 4;
      // in[i, i + count) into lanes [first, first + count) of the chunk's 16, the rest zero.
      const __m512 values = _mm512_maskz_expandloadu_ps(mask, in + r * ld + i);
      const __m256bh rounded = _mm512_cvtneps_pbh(values);
      const __m256i bits = reinterpret_cast<const __m256i&>(rounded);
      alignas(64) uint64_t pairs[kChunk];
      for (int half = 0; half < 2; ++half) {
        const __m512i v = _mm512_cvtepu16_epi64(half == 0 ? _mm256_castsi256_si128(bits)
                                                          : _mm256_extracti128_si256(bits, 1));
        _mm512_store_si512(pairs + 8 * half, _mm512_or_si512(v, _mm512_slli_epi64(v, 48)));
      }
      for (int64_t c = first; c < first + count; ++c) std::memcpy(tile + c * 32, &pairs[c], 8);
    }
    i += count;
  }
}

// Stores the sums of a pass of `Groups` groups, tiles 0 .. 2·Groups − 1: tile i to sums[i].
template <int Groups>
void StoreSums(float (*sums)[kQuadsPerTile][16]) {
  _tile_stored(0, sums[0], 64);
  _tile_stored(1, sums[1], 64);
  if constexpr (Groups == 2) {
    _tile_stored(2, sums[2], 64);
    _tile_stored(3, sums[3], 64);
  }
}

// One pass over a block: sums one left tile pair (quads at `a`, quad_bytes apart) over every chunk
// against `Groups` token groups (right tiles at `b`, group after group) into sums[0 .. 2·Groups):
// group g's rows a, b in sums[2g], rows c, d in sums[2g + 1]. With `prefetch_quads` > 0 (the first
// pass over a block, which reads it from DRAM), warms that many quads' rows kPrefetchChunks ahead:
// the tile loads' 16 strided streams otherwise wait on DRAM latency.
template <int Groups>
void Pass(const uint16_t* a, int64_t quad_bytes, const uint16_t* b, int64_t chunks,
          int prefetch_quads, float (*sums)[kQuadsPerTile][16]) {
  static_assert(Groups == 1 || Groups == 2);
  _tile_zero(0);
  _tile_zero(1);
  if constexpr (Groups == 2) {
    _tile_zero(2);
    _tile_zero(3);
  }
  const uint16_t* b1 = b + chunks * kTileValues;
  for (int64_t c = 0; c < chunks; ++c) {
    const char* ahead = reinterpret_cast<const char*>(a + (c + kPrefetchChunks) * 4 * kChunk);
    for (int q = 0; q < prefetch_quads; ++q) {
      _mm_prefetch(ahead + q * quad_bytes, _MM_HINT_T0);
      _mm_prefetch(ahead + q * quad_bytes + 64, _MM_HINT_T0);
    }
    const uint16_t* ab = a + c * 4 * kChunk;
    const uint16_t* cd = ab + 2 * kChunk;
    _tile_loadd(4, ab, quad_bytes);
    _tile_loadd(5, cd, quad_bytes);
    _tile_loadd(6, b + c * kTileValues, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 5, 6);
    if constexpr (Groups == 2) {
      _tile_loadd(7, b1 + c * kTileValues, 64);
      _tile_dpbf16ps(2, 4, 7);
      _tile_dpbf16ps(3, 5, 7);
    }
  }
  StoreSums<Groups>(sums);
}

// Sums of one token group: ab[m][2t + s] is row 4m + s for token t, cd[m][2t + s] row 4m + 2 + s.
// Writes tokens [0, tokens) and rows [0, rows) of out.
void Scatter(const float (*ab)[16], const float (*cd)[16], int quads, int64_t rows, int tokens,
             float* out, int64_t ldo) {
  for (int t = 0; t < tokens; ++t) {
    float* row = out + t * ldo;
    for (int m = 0; m < quads; ++m) {
      const int64_t r = 4 * m;
      if (r + 4 <= rows) {
        std::memcpy(row + r, &ab[m][2 * t], 2 * sizeof(float));
        std::memcpy(row + r + 2, &cd[m][2 * t], 2 * sizeof(float));
      } else {
        const float quad[4] = {ab[m][2 * t], ab[m][2 * t + 1], cd[m][2 * t], cd[m][2 * t + 1]};
        std::copy(quad, quad + (rows - r), row + r);
      }
    }
  }
}

void Dots(const uint16_t* quads, int64_t rows, int64_t k, const uint16_t* packed,
          int64_t first_token, int64_t tokens, float* out, int64_t ldo) {
  const int64_t chunks = k / kChunk, quad_bytes = 4 * k * sizeof(uint16_t);
  const int64_t total_quads = (rows + 3) / 4;
  const int64_t first_group = first_token / kTokensPerGroup;
  const int64_t end_group = (first_token + tokens + kTokensPerGroup - 1) / kTokensPerGroup;
  alignas(64) float sums[4][kQuadsPerTile][16];
  int configured_quads = 0;
  for (int64_t q0 = 0; q0 < total_quads; q0 += kQuadsPerTile) {
    const int nq = static_cast<int>(std::min<int64_t>(kQuadsPerTile, total_quads - q0));
    const uint16_t* a = quads + q0 * 4 * k;
    if (nq != configured_quads) {
      const AmxTileConfig config = ConfigFor(nq);
      _tile_loadconfig(&config);
      configured_quads = nq;
    }
    for (int64_t g = first_group; g < end_group;) {
      const int groups = static_cast<int>(std::min<int64_t>(2, end_group - g));
      const uint16_t* b = packed + g * chunks * kTileValues;
      const int prefetch_quads = g == first_group ? nq : 0;
      if (groups == 2) {
        Pass<2>(a, quad_bytes, b, chunks, prefetch_quads, sums);
      } else {
        Pass<1>(a, quad_bytes, b, chunks, prefetch_quads, sums);
      }
      for (int i = 0; i < groups; ++i) {
        const int64_t t0 = (g + i) * kTokensPerGroup;
        const int n =
            static_cast<int>(std::min<int64_t>(kTokensPerGroup, first_token + tokens - t0));
        Scatter(sums[2 * i], sums[2 * i + 1], nq, rows - 4 * q0, n,
                out + (t0 - first_token) * ldo + 4 * q0, ldo);
      }
      g += groups;
    }
  }
  if (configured_quads != 0) _tile_release();
}

}  // namespace
}  // namespace moe

MOE_ISA_TARGET_END()

namespace moe {

const Bf16DotKernels* AmxBf16DotKernels() {
  static const Bf16DotKernels* const kernels = []() -> const Bf16DotKernels* {
    // From 2 tokens on AMX beats the streaming kernel on a 2-core Xeon (Sapphire Rapids class).
    static const Bf16DotKernels amx = {"amx-bf16",
                                       /*rows_per_block=*/4 * kQuadsPerTile,
                                       /*min_tokens=*/2,
                                       &PackedValues,
                                       &Pack,
                                       &Dots,
                                       /*int8_min_tokens=*/0,
                                       /*dots_int8=*/nullptr};
    const bool supported = Avx512Bf16DotKernels() != nullptr && CpuHasAmxBf16();
    return supported && AmxTileStateGranted() ? &amx : nullptr;
  }();
  return kernels;
}

}  // namespace moe

#else  // not x86-64 GCC/Clang

namespace moe {
const Bf16DotKernels* AmxBf16DotKernels() { return nullptr; }
}  // namespace moe

#endif
