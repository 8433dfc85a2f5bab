// AMX build of the staged bf16 dot kernels, "amx-bf16-staged" (bf16_dot_kernel.h), for calls of
// more than 16 tokens. Every kernel function in this file is compiled for AMX-TILE + AMX-BF16 (and
// AVX512-BF16 for packing) through MOE_ISA_TARGET_BEGIN below (isa_target.h; not a global -march
// flag), and is only reached after AmxBf16DotKernels() (bf16_dot_kernel_amx.cc) checked the CPU at
// run time and obtained the tile state from Linux.
//
// Tiles: the weights are the left operand (16 rows × 32 columns, each tile row 32 columns of one
// weight row), tokens the right one in the pair layout TDPBF16PS reads (tile row p holds one pair
// of columns of 16 tokens), so every product the tile unit computes is wanted. A pass keeps two
// left tiles (32 weight rows: tmm4-5), two right tiles (32 tokens: tmm6-7) and their four 16 × 16
// sums (tmm0-3). The weights' quad layout interleaves rows a and b (c and d) of a quad, so the
// first pass over 32 rows de-interleaves each 32-column chunk into per-thread staging (a shift and
// a blend per 64 bytes, one chunk ahead of the tile loads that read it): word 2i of a staged row is
// column i of the chunk, word 2i + 1 column 16 + i, and tokens are packed in the same order. Where
// one pass covers a call's tokens (up to 32) the staging is a ring of 4 chunks (8 KB, in L1);
// otherwise it keeps every chunk (2 KB each, from L2) for the further passes. Int8 weights
// (dots_int8: an Int8Matrix's quads, the same layout with one byte per value) are staged the same
// way, each value widened exactly to bf16, and every sum is then multiplied by its row's scale.
// Each dots call loads its tile configuration and releases the tiles on return, so no thread keeps
// the 8 KB of tile state past a call.
#include "common/kernels/bf16_dot_kernel.h"

#if defined(__x86_64__) && defined(__GNUC__)

#include <immintrin.h>

#include <algorithm>

#include "common/kernels/amx_tiles.h"
#include "common/kernels/isa_target.h"
#include "common/tensor/aligned_vector.h"
#include "common/tensor/bf16_matrix.h"

MOE_ISA_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16")

namespace moe {
namespace {

constexpr int kTile = 16;             // weight rows of a left tile, tokens of a right one
constexpr int64_t kTileCols = 32;     // bf16 columns a tile spans (64 bytes per tile row)
constexpr int64_t kTileValues = 512;  // uint16 values of a tile: 16 rows × 64 bytes
constexpr int kQuadsPerPass = 8;      // two left tiles: 32 weight rows, 8 Bf16Matrix quads
static_assert(Bf16Matrix::kQuadRows == 4 && Bf16Matrix::kChunkCols == 16);
static_assert(kBf16DotTokenAlign == kTile);
// How far ahead of its loads the first pass over a quad warms that quad's stream (one quad is a
// contiguous run of memory; eight of them stream side by side).
constexpr int64_t kPrefetchBytes = 2048;
constexpr int64_t kRingChunks = 4;       // staged chunks a single pass keeps (8 KB)
constexpr int64_t kChunkBytesInt8 = 16;  // one row's bytes in a 16-column Int8Matrix chunk

// Every tile 16 rows of 64 bytes.
AmxTileConfig FullTiles() {
  AmxTileConfig config;
  for (int t = 0; t < 8; ++t) config.Set(t, kTile, 64);
  return config;
}

int64_t Chunks(int64_t k) { return (k + kTileCols - 1) / kTileCols; }

// Packed layout: token group g (tokens 16g..16g+15), chunk c (columns 32c..32c+31) is the right
// tile at packed + (g · Chunks(k) + c) · kTileValues. Tile row p holds the pairs (column 32c + p,
// column 32c + 16 + p) of the 16 tokens, the column order Stage gives the weights: column j of
// token 16g + t is word 32 · (j % 16) + 2t + j % 32 / 16 of it.
int64_t PackedValues(int64_t tokens, int64_t k) {
  return (tokens + kTile - 1) / kTile * Chunks(k) * kTileValues;
}

// Token by token, chunk by chunk: a whole chunk is converted at once and its 16 pairs scattered to
// the tile's rows; part of a chunk (a call's edge) word by word.
void Pack(const float* in, int64_t ld, int64_t rows, int64_t n, int64_t first_token, int64_t col,
          int64_t k, uint16_t* packed) {
  const int64_t chunks = Chunks(k);
  const __m512i row_offsets =
      _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                         _mm512_set1_epi32(kTileCols / 2));  // of tile row p, in 32-bit words
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t token = first_token + r;
    uint16_t* group = packed + token / kTile * chunks * kTileValues + token % kTile * 2;
    const float* src = in + r * ld;
    for (int64_t i = 0; i < n;) {
      const int64_t j = col + i;
      const int first = static_cast<int>(j % kTileCols);
      const int count = static_cast<int>(std::min<int64_t>(kTileCols - first, n - i));
      const uint32_t lanes = static_cast<uint32_t>(((uint64_t{1} << count) - 1) << first);
      const __mmask16 low = static_cast<__mmask16>(lanes),
                      high = static_cast<__mmask16>(lanes >> 16);
      const __m512 lo = _mm512_maskz_expandloadu_ps(low, src + i);
      const __m512 hi = _mm512_maskz_expandloadu_ps(high, src + i + __builtin_popcount(low));
      const __m512i lo_bits =
          _mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(lo)));
      const __m512i hi_bits =
          _mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(hi)));
      const __m512i pairs = _mm512_or_si512(lo_bits, _mm512_slli_epi32(hi_bits, 16));
      uint16_t* tile = group + j / kTileCols * kTileValues;
      if (count == kTileCols) {
        _mm512_i32scatter_epi32(tile, row_offsets, pairs, 4);
      } else {
        alignas(64) uint16_t words[kTileCols];  // pair p: words 2p, 2p + 1
        _mm512_store_si512(words, pairs);
        for (int c = first; c < first + count; ++c) {
          tile[c % 16 * kTileCols + c / 16] = words[2 * (c % 16) + c / 16];
        }
      }
      i += count;
    }
  }
}

// The weights of one pass: `quads` (1..8) quads from `first`, each `quad_values` apart, k columns;
// Q is uint16_t for a Bf16Matrix's quads, int8_t for an Int8Matrix's.
template <typename Q>
struct PassRows {
  const Q* first;
  int64_t quad_values;
  int quads;
  int64_t k;
};

// One quad's rows a, b, c, d of a 32-column chunk (at `src`; `whole`: else only its first 16
// columns exist) into four staged rows at `dst`, kTileCols apart, prefetching the quad's stream.
void StageQuad(const uint16_t* src, bool whole, uint16_t* dst) {
  const char* ahead = reinterpret_cast<const char*>(src) + kPrefetchBytes;
  for (int line = 0; line < 4; ++line) _mm_prefetch(ahead + 64 * line, _MM_HINT_T0);
  const __m512i ab0 = _mm512_load_si512(src), cd0 = _mm512_load_si512(src + 32);
  const __m512i ab1 = whole ? _mm512_load_si512(src + 64) : _mm512_setzero_si512();
  const __m512i cd1 = whole ? _mm512_load_si512(src + 96) : _mm512_setzero_si512();
  // Row a: the low word of each of ab0's pairs, ab1's moved up beside it; row b: the high words
  // of ab0's pairs moved down, beside ab1's.
  constexpr __mmask32 kHigh = 0xAAAAAAAA;
  _mm512_store_si512(dst, _mm512_mask_blend_epi16(kHigh, ab0, _mm512_slli_epi32(ab1, 16)));
  _mm512_store_si512(dst + kTileCols,
                     _mm512_mask_blend_epi16(kHigh, _mm512_srli_epi32(ab0, 16), ab1));
  _mm512_store_si512(dst + 2 * kTileCols,
                     _mm512_mask_blend_epi16(kHigh, cd0, _mm512_slli_epi32(cd1, 16)));
  _mm512_store_si512(dst + 3 * kTileCols,
                     _mm512_mask_blend_epi16(kHigh, _mm512_srli_epi32(cd0, 16), cd1));
}

// 16 int8 values as the bits of their float32s (exact), whose top halves are their bf16s.
__m512i Float32Bits(const int8_t* values) {
  return _mm512_castps_si512(_mm512_cvtepi32_ps(
      _mm512_cvtepi8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(values)))));
}

// The same for int8 weights: a 32-column chunk of a quad is two 64-byte lines (16 columns of rows
// a, b, c, d each); every value is an integer of at most 7 bits, exact in bf16, whose bits are
// the top half of its float32's, so a staged pair (column i, column 16 + i) is the float32 bits of
// column 16 + i with those of column i shifted down into the low half.
void StageQuad(const int8_t* src, bool whole, uint16_t* dst) {
  const char* ahead = reinterpret_cast<const char*>(src) + kPrefetchBytes;
  for (int line = 0; line < 2; ++line) _mm_prefetch(ahead + 64 * line, _MM_HINT_T0);
  for (int r = 0; r < 4; ++r) {
    const __m512i low = Float32Bits(src + kChunkBytesInt8 * r);
    const __m512i high = whole ? Float32Bits(src + (4 + r) * kChunkBytesInt8)  // next chunk
                               : _mm512_setzero_si512();
    _mm512_store_si512(dst + r * kTileCols, _mm512_or_si512(high, _mm512_srli_epi32(low, 16)));
  }
}

// Chunk c of a pass's rows into its two left tiles at `left` (quad i → tile i / 4, rows
// 4 · (i % 4) .. + 3); rows of absent quads, and columns past k, are zero.
template <typename Q>
void Stage(const PassRows<Q>& w, int64_t c, uint16_t* left) {
  const bool whole = kTileCols * (c + 1) <= w.k;             // else only columns 32c..32c+15 exist
  const int staged_quads = w.quads > 4 ? kQuadsPerPass : 4;  // one left tile or two
  for (int i = 0; i < staged_quads; ++i) {
    uint16_t* dst = left + i / 4 * kTileValues + i % 4 * 4 * kTileCols;
    if (i < w.quads) {
      StageQuad(w.first + i * w.quad_values + c * 4 * kTileCols, whole, dst);
    } else {
      for (int r = 0; r < 4; ++r) _mm512_store_si512(dst + r * kTileCols, _mm512_setzero_si512());
    }
  }
}

// One pass: Rows (1 or 2) left tiles against Groups (1 or 2) token groups (right tiles at `b`,
// group after group), summed over every chunk into sums[2 · row tile + group] ([weight
// row][token]). With `rows` non-null (the first pass over them) the chunks are staged from the
// weights as the pass goes; otherwise `staging` already holds them.
template <int Rows, int Groups, typename Q>
void Pass(const PassRows<Q>* rows, uint16_t* staging, int64_t slots, const uint16_t* b,
          int64_t chunks, float (*sums)[kTile][kTile]) {
  _tile_zero(0);
  if constexpr (Groups == 2) _tile_zero(1);
  if constexpr (Rows == 2) _tile_zero(2);
  if constexpr (Rows == 2 && Groups == 2) _tile_zero(3);
  const uint16_t* b1 = b + chunks * kTileValues;
  auto slot = [&](int64_t c) { return staging + c % slots * 2 * kTileValues; };
  if (rows != nullptr) Stage(*rows, 0, slot(0));
  for (int64_t c = 0; c < chunks; ++c) {
    const uint16_t* left = slot(c);
    // One chunk ahead: tile loads wait for the stores they read to reach L1.
    if (rows != nullptr && c + 1 < chunks) Stage(*rows, c + 1, slot(c + 1));
    _tile_loadd(4, left, 64);
    if constexpr (Rows == 2) _tile_loadd(5, left + kTileValues, 64);
    _tile_loadd(6, b + c * kTileValues, 64);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (Rows == 2) _tile_dpbf16ps(2, 5, 6);
    if constexpr (Groups == 2) {
      _tile_loadd(7, b1 + c * kTileValues, 64);
      _tile_dpbf16ps(1, 4, 7);
      if constexpr (Rows == 2) _tile_dpbf16ps(3, 5, 7);
    }
  }
  _tile_stored(0, sums[0], 64);
  if constexpr (Groups == 2) _tile_stored(1, sums[1], 64);
  if constexpr (Rows == 2) _tile_stored(2, sums[2], 64);
  if constexpr (Rows == 2 && Groups == 2) _tile_stored(3, sums[3], 64);
}

// The per-thread staging block, grown to the largest pass seen (32 rows × Chunks(k) · 32 columns).
uint16_t* Staging(int64_t chunks) {
  thread_local AlignedVector<uint16_t> staging;
  const size_t values = static_cast<size_t>(chunks * 2 * kTileValues);
  if (staging.size() < values) staging.resize(values);
  return staging.data();
}

// out = (scales[r] ·) Σ w[r][i] · x_t[i] over the quads of a Bf16Matrix (Q = uint16_t, scales
// nullptr) or an Int8Matrix (Q = int8_t, its row scales).
template <typename Q>
void DotsOf(const Q* quads, const float* scales, int64_t rows, int64_t k, const uint16_t* packed,
            int64_t first_token, int64_t tokens, float* out, int64_t ldo) {
  const int64_t chunks = Chunks(k), quad_values = 4 * k;
  const int64_t total_quads = (rows + 3) / 4;
  const int64_t first_group = first_token / kTile;
  const int64_t end_group = (first_token + tokens + kTile - 1) / kTile;
  uint16_t* staging = Staging(chunks);
  // One pass over each block of rows (up to 32 tokens) stages its chunks in a ring that stays in
  // L1; more passes keep every chunk for the next ones.
  const int64_t slots = end_group - first_group <= 2 ? std::min(kRingChunks, chunks) : chunks;
  alignas(64) float sums[4][kTile][kTile];
  const AmxTileConfig config = FullTiles();
  _tile_loadconfig(&config);
  for (int64_t q0 = 0; q0 < total_quads; q0 += kQuadsPerPass) {
    const PassRows<Q> pass_rows = {
        quads + q0 * quad_values, quad_values,
        static_cast<int>(std::min<int64_t>(kQuadsPerPass, total_quads - q0)), k};
    const bool two_row_tiles = pass_rows.quads > 4;
    for (int64_t g = first_group; g < end_group; g += 2) {
      const PassRows<Q>* stage = g == first_group ? &pass_rows : nullptr;
      const uint16_t* b = packed + g * chunks * kTileValues;
      const bool two_groups = end_group - g >= 2;
      if (two_row_tiles) {
        two_groups ? Pass<2, 2>(stage, staging, slots, b, chunks, sums)
                   : Pass<2, 1>(stage, staging, slots, b, chunks, sums);
      } else {
        two_groups ? Pass<1, 2>(stage, staging, slots, b, chunks, sums)
                   : Pass<1, 1>(stage, staging, slots, b, chunks, sums);
      }
      // sums[2 · row tile + group][row][token] → out[token][row], rows and tokens in range only.
      for (int group = 0; group < (two_groups ? 2 : 1); ++group) {
        const int64_t t0 = std::max((g + group) * kTile, first_token);
        const int64_t t1 = std::min((g + group + 1) * kTile, first_token + tokens);
        for (int tile = 0; tile < (two_row_tiles ? 2 : 1); ++tile) {
          const int64_t r0 = 4 * q0 + kTile * tile;
          const int64_t n = std::min<int64_t>(kTile, rows - r0);
          const float(*s)[kTile] = sums[2 * tile + group];
          for (int64_t t = t0; t < t1; ++t) {
            float* row = out + (t - first_token) * ldo + r0;
            if (scales == nullptr) {
              for (int64_t r = 0; r < n; ++r) row[r] = s[r][t % kTile];
            } else {
              for (int64_t r = 0; r < n; ++r) row[r] = scales[r0 + r] * s[r][t % kTile];
            }
          }
        }
      }
    }
  }
  _tile_release();
}

void Dots(const uint16_t* quads, int64_t rows, int64_t k, const uint16_t* packed,
          int64_t first_token, int64_t tokens, float* out, int64_t ldo) {
  DotsOf(quads, nullptr, rows, k, packed, first_token, tokens, out, ldo);
}

void DotsInt8(const int8_t* quads, const float* scales, int64_t rows, int64_t k,
              const uint16_t* packed, int64_t first_token, int64_t tokens, float* out,
              int64_t ldo) {
  DotsOf(quads, scales, rows, k, packed, first_token, tokens, out, ldo);
}

}  // namespace
}  // namespace moe

MOE_ISA_TARGET_END()

namespace moe {

const Bf16DotKernels* AmxBf16StagedDotKernels() {
  // From 17 tokens per call, where the in-place kernel needs a second pass over each block.
  static const Bf16DotKernels staged = {"amx-bf16-staged",
                                        /*rows_per_block=*/4 * kQuadsPerPass,
                                        /*min_tokens=*/17,
                                        &PackedValues,
                                        &Pack,
                                        &Dots,
                                        /*int8_min_tokens=*/kInt8StagedMinTokens,
                                        &DotsInt8};
  return AmxBf16DotKernels() != nullptr ? &staged : nullptr;
}

}  // namespace moe

#else  // not x86-64 GCC/Clang

namespace moe {
const Bf16DotKernels* AmxBf16StagedDotKernels() { return nullptr; }
}  // namespace moe

#endif
