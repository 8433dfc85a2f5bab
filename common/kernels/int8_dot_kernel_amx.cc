// AMX build of the int8 dots, "amx-int8" (int8_dot_kernel.h). Every kernel function in this file
// is compiled for AMX-TILE + AMX-INT8 (and AVX512-BW/VL for the packing) through
// MOE_ISA_TARGET_BEGIN below (isa_target.h; not a global -march flag), and is only reached after
// AmxInt8DotKernels() checked the CPU at run time and obtained the tile state from Linux.
//
// Tile registers, for a pass over a block of up to 16 quads, two of each quad's four rows (slots
// j and j + 1) and one group of 16 tokens: C0/C1 (tmm0-1) the lo- and hi-half int32 sums of slot
// j, C2/C3 (tmm2-3) those of slot j + 1, one row per quad and one column per token; A0/A1 (tmm4,
// tmm7) slot j's and j + 1's 16 bytes of one 16-column chunk, one row per quad; B (tmm5-6) the
// chunk's lo and hi halves of the 16 tokens (4 rows of 16 tokens × 4 columns). Two passes cover a
// quad's four rows; the first streams the block from memory, the second reads it from L2.
#include "common/kernels/int8_dot_kernel.h"

#if defined(__x86_64__) && defined(__GNUC__)

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "common/kernels/amx_tiles.h"
#include "common/kernels/int8_matrix.h"
#include "common/kernels/isa_target.h"

MOE_ISA_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,amx-tile,amx-int8")

namespace moe {
namespace {

constexpr int kQuadsPerTile = 16;       // rows of a left tile and of a sum tile: one per quad
constexpr int kChunk = 16;              // columns per chunk: one 64-byte line of a quad
constexpr int kRowBytes = kChunk;       // bytes of one row of a quad in a line
constexpr int64_t kHalfBytes = 256;     // a right tile: 4 rows × 64 bytes
constexpr int64_t kChunkBytes = 512;    // a chunk of a token group: its lo tile, then its hi tile
constexpr int64_t kPrefetchChunks = 8;  // how far ahead the first pass warms each quad (512 bytes)
static_assert(Int8Matrix::kQuadRows == 4 && Int8Matrix::kChunkCols == kChunk);
static_assert(kInt8AmxTokenAlign == 16);

// Sum tiles: a row per quad, 16 int32 columns; left tiles: a row per quad, 16 bytes; right tiles:
// 4 rows (the 16 bytes' 4 dword groups) of 64 bytes.
AmxTileConfig ConfigFor(int quads) {
  AmxTileConfig config;
  for (int t = 0; t < 4; ++t) config.Set(t, quads, 64);
  return config.Set(4, quads, kRowBytes).Set(7, quads, kRowBytes).Set(5, 4, 64).Set(6, 4, 64);
}

// Packed layout: token group g (tokens 16g..16g+15), chunk c (columns 16c..16c+15) is 512 bytes at
// packed + (g · chunks + c) · 512: the lo tile, then the hi tile. In each, row p (0-3) holds at
// bytes 4t..4t+3 the halves of token 16g + t's columns 16c + 4p .. 16c + 4p + 3.
int64_t PackedBytes(int64_t tokens, int64_t k) {
  return (tokens + kInt8AmxTokenAlign - 1) / kInt8AmxTokenAlign * (k / kChunk) * kChunkBytes;
}

void Pack(const int16_t* xq, int64_t ldq, int64_t first_token, int64_t tokens, int64_t k,
          uint8_t* packed) {
  const int64_t chunks = k / kChunk;
  for (int64_t t = first_token; t < first_token + tokens; ++t) {
    const int16_t* row = xq + t * ldq;
    uint8_t* group =
        packed + t / kInt8AmxTokenAlign * chunks * kChunkBytes + t % kInt8AmxTokenAlign * 4;
    for (int64_t c = 0; c < chunks; ++c) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + c * kChunk));
      // xq = 256 · hi + lo exactly: lo the low byte (unsigned), hi the arithmetic high byte.
      alignas(16) uint32_t halves[2][4];
      _mm_store_si128(reinterpret_cast<__m128i*>(halves[0]), _mm256_cvtepi16_epi8(v));
      _mm_store_si128(reinterpret_cast<__m128i*>(halves[1]),
                      _mm256_cvtepi16_epi8(_mm256_srai_epi16(v, 8)));
      uint8_t* tiles = group + c * kChunkBytes;
      for (int half = 0; half < 2; ++half) {
        for (int p = 0; p < 4; ++p) {
          std::memcpy(tiles + half * kHalfBytes + p * 64, &halves[half][p], 4);
        }
      }
    }
  }
}

// One pass: slots j, j + 1 of the block's quads (their bytes from `a`, quads quad_bytes apart)
// against one token group (`b`) over every chunk, into sums[0..3] (lo j, hi j, lo j+1, hi j+1).
// With `prefetch_quads` > 0 (a block's first pass, from DRAM) warms that many quads' lines
// kPrefetchChunks ahead: the tile loads' strided streams otherwise wait on memory latency.
void Pass(const int8_t* a, int64_t quad_bytes, const uint8_t* b, int64_t chunks, int prefetch_quads,
          int32_t (*sums)[kQuadsPerTile][16]) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t c = 0; c < chunks; ++c) {
    const int8_t* line = a + c * 64;
    for (int q = 0; q < prefetch_quads; ++q) {
      _mm_prefetch(reinterpret_cast<const char*>(line + q * quad_bytes + kPrefetchChunks * 64),
                   _MM_HINT_T0);
    }
    const uint8_t* bc = b + c * kChunkBytes;
    _tile_loadd(5, bc, 64);
    _tile_loadd(6, bc + kHalfBytes, 64);
    _tile_loadd(4, line, quad_bytes);
    _tile_loadd(7, line + kRowBytes, quad_bytes);
    _tile_dpbsud(0, 4, 5);
    _tile_dpbssd(1, 4, 6);
    _tile_dpbsud(2, 7, 5);
    _tile_dpbssd(3, 7, 6);
  }
  _tile_stored(0, sums[0], 64);
  _tile_stored(1, sums[1], 64);
  _tile_stored(2, sums[2], 64);
  _tile_stored(3, sums[3], 64);
}

void Dots(const int8_t* quads, const float* scales, int64_t rows, int64_t k, const uint8_t* packed,
          const float* x_scales, int64_t first_token, int64_t tokens, float* out, int64_t ldo) {
  const int64_t chunks = k / kChunk, quad_bytes = Int8Matrix::kQuadRows * k;
  const int64_t total_quads = (rows + 3) / 4;
  const int64_t first_group = first_token / kInt8AmxTokenAlign;
  const int64_t end_group = (first_token + tokens + kInt8AmxTokenAlign - 1) / kInt8AmxTokenAlign;
  alignas(64) int32_t sums[4][kQuadsPerTile][16];
  int configured_quads = 0;
  for (int64_t q0 = 0; q0 < total_quads; q0 += kQuadsPerTile) {
    const int nq = static_cast<int>(std::min<int64_t>(kQuadsPerTile, total_quads - q0));
    if (nq != configured_quads) {
      const AmxTileConfig config = ConfigFor(nq);
      _tile_loadconfig(&config);
      configured_quads = nq;
    }
    const int8_t* block = quads + q0 * quad_bytes;
    for (int64_t g = first_group; g < end_group; ++g) {
      const int64_t t0 = std::max(first_token, g * kInt8AmxTokenAlign);
      const int64_t t1 = std::min(first_token + tokens, (g + 1) * kInt8AmxTokenAlign);
      for (int j = 0; j < 4; j += 2) {
        Pass(block + j * kRowBytes, quad_bytes, packed + g * chunks * kChunkBytes, chunks,
             g == first_group && j == 0 ? nq : 0, sums);
        for (int s = 0; s < 2; ++s) {
          for (int m = 0; m < nq; ++m) {
            const int64_t r = 4 * (q0 + m) + j + s;
            if (r >= rows) continue;
            for (int64_t t = t0; t < t1; ++t) {
              const int column = static_cast<int>(t % kInt8AmxTokenAlign);
              // Exact in double (|hi| · 256 + |lo| sums stay far below 2^53), then rounded once
              // to float32 and scaled as the VNNI dots do.
              const double sum = 256.0 * sums[2 * s + 1][m][column] + sums[2 * s][m][column];
              out[(t - first_token) * ldo + r] = scales[r] * x_scales[t] * static_cast<float>(sum);
            }
          }
        }
      }
    }
  }
  if (configured_quads != 0) _tile_release();
}

}  // namespace
}  // namespace moe

MOE_ISA_TARGET_END()

namespace moe {

const Int8AmxDotKernels* AmxInt8DotKernels() {
  static const Int8AmxDotKernels* const kernels = []() -> const Int8AmxDotKernels* {
    // From 16 tokens per call the tiles overtake the VNNI dots through the FFN (bench/README.md).
    static const Int8AmxDotKernels amx = {"amx-int8", /*min_tokens=*/16, &PackedBytes, &Pack,
                                          &Dots};
    __builtin_cpu_init();
    const bool supported =
        CpuHasAmxInt8() && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    return supported && AmxTileStateGranted() ? &amx : nullptr;
  }();
  return kernels;
}

}  // namespace moe

#else  // not x86-64 GCC/Clang

namespace moe {
const Int8AmxDotKernels* AmxInt8DotKernels() { return nullptr; }
}  // namespace moe

#endif
