// AMX-INT8 dots of int8 weight rows (an Int8Matrix, common/kernels/int8_matrix.h) with activations
// rounded to int16 (RowDotKernels::quantize_activations: x ≈ x_scale · xq, |xq| ≤ 16 383): the
// same exact int32 sums as the VNNI row dots (row_dot_kernel_avx512vnni.cc), on the tile unit, for
// calls from min_tokens tokens up, where the VNNI dots are bound by their arithmetic. Internal to
// the FFN kernels; SwigluForward is the public face (swiglu_streaming.cc takes these dots for int8
// weights where the CPU has AMX-INT8, and then never switches int8 calls to OpenBLAS).
//
// How: the tile unit multiplies int8 by int8 (TDPBSSD) or int8 by uint8 (TDPBSUD), so each int16
// activation is split exactly as xq = 256 · hi + lo, lo = xq mod 256 (uint8) and hi = xq >> 8
// (int8, −64..63), and the two halves are summed in separate int32 tiles (no sum can overflow:
// k ≤ kInt8AmxMaxCols), then combined exactly in double. The weights are read in place: a left
// tile is one 16-column chunk of 16 quads, 16 bytes per quad (one of the quad's four rows: the
// Int8Matrix layout unchanged), so a tile multiply uses a quarter of the unit's width; one pass
// over a block serves 16 tokens, and the weights stream from memory once per call for up to 16
// tokens (again from L2 for each further 16).
//
// Linux grants the tile state per process; AmxInt8DotKernels() asks once (amx_tiles.h) and
// returns nullptr if refused, or without AMX-INT8 and AVX-512 (the packing uses AVX512-BW).
// Thread-safe: each dots call loads its tile configuration and releases the tiles on return.
#ifndef MOE_COMMON_KERNELS_INT8_DOT_KERNEL_H_
#define MOE_COMMON_KERNELS_INT8_DOT_KERNEL_H_

#include <cstdint>

namespace moe {

// `first_token` of a dots call is a multiple of this (a token group: one right tile's 16 columns).
inline constexpr int64_t kInt8AmxTokenAlign = 16;
// The most columns (k) the dots take: past it a lo-half sum (k products of 255 · 127) could
// overflow int32.
inline constexpr int64_t kInt8AmxMaxCols = 65536;

struct Int8AmxDotKernels {
  const char* name;    // "amx-int8"
  int64_t min_tokens;  // the FFN takes these dots from this many tokens per call (measured)
  // Bytes a packed block of `tokens` token rows of k columns takes (k a multiple of 16).
  int64_t (*packed_bytes)(int64_t tokens, int64_t k);
  // Packs token rows [first_token, first_token + tokens) of int16 activations (row t at
  // xq + t · ldq, k values) into `packed`, laid out for `tokens` ≥ every packed token.
  void (*pack)(const int16_t* xq, int64_t ldq, int64_t first_token, int64_t tokens, int64_t k,
               uint8_t* packed);
  // out[(t − first_token) · ldo + r] = scales[r] · x_scales[t] · Σ_{i<k} q[r][i] · xq_t[i] for
  // r < rows, t ∈ [first_token, first_token + tokens): the `rows` rows of an Int8Matrix from quad
  // `quads`, k = its padded_cols() (≤ kInt8AmxMaxCols), against packed token rows. The sum is
  // exact, the product rounds as the VNNI dots' does (bit for bit the same result).
  void (*dots)(const int8_t* quads, const float* scales, int64_t rows, int64_t k,
               const uint8_t* packed, const float* x_scales, int64_t first_token, int64_t tokens,
               float* out, int64_t ldo);
};

// nullptr when this CPU (or compiler) has no AMX-INT8 with AVX-512, or Linux refused the tiles.
const Int8AmxDotKernels* AmxInt8DotKernels();

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_INT8_DOT_KERNEL_H_
