// The inner loops of the bf16-activation FFN path (SwigluBf16Dot in swiglu_paths.h): dots of BF16
// weight rows with bf16 token rows, summed in float32. Three implementations, each built with a
// target pragma (no -march flag) and only handed out after a run-time CPU check; thread-safe
// (the staged AMX kernel keeps a staging block per thread). Internal to the FFN kernels;
// SwigluForward is the public face.
//
// - "avx512bf16" (AVX512-BF16 vdpbf16ps, two products per instruction; AMD Zen 4/5, Intel Cooper
//   Lake and later): rows four at a time (a quad), each 64-byte load of a quad's two interleaved
//   rows permuted in a register into the two rows' 16 consecutive columns, dotted with up to 12
//   tokens at once (24 accumulators); more tokens are split into even tiles that re-read the quad
//   from L1. Where threads read several weight streams (one_token_streams 4, row_dot_kernel.h),
//   calls of up to 6 tokens read two quads side by side, one from each half of the call's rows
//   (two weight streams per thread); with one stream (Zen 4) one quad at a time, prefetched into L2
//   far ahead (few_token_prefetch.h). Tokens are packed as plain bf16 rows.
// - "amx-bf16" (Intel AMX: TDPBF16PS multiplies a 16 × 32 bf16 tile by a 32 × 16 one into 16 × 16
//   float32 sums; Sapphire Rapids and later), in place, for calls of up to 16 tokens: the weights
//   are read in place as the left tile, one row of it per quad (that quad's rows a and b,
//   interleaved, for 16 columns: 64 bytes, the Bf16Matrix layout unchanged) and a second tile for
//   rows c and d. Each such tile row holds two weight rows, so each token takes two columns of the
//   right tile, (x, 0) pairs for row a and (0, x) pairs for row b: half of the tile unit's products
//   are with zeros, which costs nothing while one pass (two groups of 8 tokens) covers a call:
//   reading the weights bounds it. Tokens are packed in those right tiles: for each group of 8
//   tokens and 16 columns, 16 rows of 64 bytes.
// - "amx-bf16-staged" (the same instructions), for calls of more than 16 tokens, where the
//   in-place kernel would take each block again for every further 16 tokens, at the tile unit's
//   rate with its zeros: 32 weight rows at a time are de-interleaved, 32 columns at a time, into a
//   per-thread staging block (a shift and a blend per 64 bytes) that the tile loads read as two
//   left tiles of 16 whole rows; tokens are packed 16 per right tile, a pair of columns per tile
//   row, so every product is wanted. A pass sums 32 rows against 32 tokens (four tiles of sums);
//   more tokens take further passes over the staged rows, from L2. Staging makes a single
//   pass 7-13% slower per core (README.md, "bf16 activations"), hence two kernels. It also takes
//   int8 weights (dots_int8), widening each value exactly to bf16 as it stages it.
// Linux grants the AMX tile state per process (arch_prctl ARCH_REQ_XCOMP_PERM); AmxBf16DotKernels()
// asks once and returns nullptr if refused, and so does AmxBf16StagedDotKernels().
#ifndef MOE_COMMON_KERNELS_BF16_DOT_KERNEL_H_
#define MOE_COMMON_KERNELS_BF16_DOT_KERNEL_H_

#include <cstdint>

#include "common/kernels/row_dot_kernel.h"

namespace moe {

// `first_token` of a dots call is a multiple of this.
inline constexpr int64_t kBf16DotTokenAlign = 16;

struct Bf16DotKernels {
  const char* name;        // "avx512bf16", "amx-bf16" or "amx-bf16-staged"
  int64_t rows_per_block;  // weight rows the FFN path hands to one dots call (a multiple of 4)
  // SwigluForward takes these kernels from this many tokens per call (below: the streaming
  // kernel), where they overtake it (measured, bench/README.md).
  int64_t min_tokens;
  // Token rows in this kernel's layout ("packed"), k columns each (k a multiple of 16): the number
  // of uint16 values a packed block of `tokens` rows takes. The caller zero-fills it.
  int64_t (*packed_values)(int64_t tokens, int64_t k);
  // Columns [col, col + n) of packed token rows [first_token, first_token + rows) =
  // bf16(in[r · ld + i]) for i < n, rounded to nearest, ties to even. Columns never set stay zero.
  void (*pack)(const float* in, int64_t ld, int64_t rows, int64_t n, int64_t first_token,
               int64_t col, int64_t k, uint16_t* packed);
  // out[(t − first_token) · ldo + r] = Σ_{i<k} w[r][i] · x_t[i] for r < rows and
  // t ∈ [first_token, first_token + tokens), where w is the `rows` rows of a Bf16Matrix starting at
  // quad `quads`, k = its padded_cols(), and x_t is packed token row t. Sums in float32.
  void (*dots)(const uint16_t* quads, int64_t rows, int64_t k, const uint16_t* packed,
               int64_t first_token, int64_t tokens, float* out, int64_t ldo);
  // Int8 weights (dots_int8 null: this kernel does not take them), from int8_min_tokens tokens per
  // call: the same as `dots` over the `rows` rows of an Int8Matrix from quad `quads` (every value
  // an integer of 7 bits, exact in bf16), each sum times its row's scale:
  // out[...] = scales[r] · Σ q[r][i] · x_t[i].
  int64_t int8_min_tokens;
  void (*dots_int8)(const int8_t* quads, const float* scales, int64_t rows, int64_t k,
                    const uint16_t* packed, int64_t first_token, int64_t tokens, float* out,
                    int64_t ldo);
};

// nullptr when this CPU (or compiler) has no AVX512-BF16 (with AVX-512F/BW/VL/DQ), or
// `one_token_streams` is not 0, 1 or 4. The set reading calls of 4-6 tokens the way threads read
// `one_token_streams` weight streams (row_dot_kernel.h): with 4, two parts of the call's quads side
// by side; with 1, one quad at a time; with 0, the process's choice (ProcessOneTokenStreams). Both
// give the same sums.
const Bf16DotKernels* Avx512Bf16DotKernels(int one_token_streams = 0);
// Whether SwigluForward takes the avx512bf16 kernels by itself on a CPU that has them (a forced
// bf16-activation path runs them anyway). On AMD, yes: on Zen 4 and 5 their two products per
// instruction nearly double the float32 FLOP/s (bf16 ÷ fp32 1.8-2.4 at 256 tokens of a real
// layer, README "Real layer shapes"). On Intel, no: a Xeon of family 6 model 207 (AMX hidden by its
// hypervisor) retired vdpbf16ps at a quarter of its FMA rate, half the float32 FLOP/s: the AVX-512
// kernels widening the bf16 rows in registers were within 5% of them either way at 4-8 tokens per
// call and 1.19-1.40x faster at 16-32 (OLMoE and Qwen3 layers; README "bf16 activations"). Intel
// CPUs with AMX take such calls on the tiles instead.
bool Avx512Bf16DotsPayOff(const CpuIdentity& cpu);
// Avx512Bf16DotKernels() where Avx512Bf16DotsPayOff(ThisCpu()), else nullptr (looked up once).
const Bf16DotKernels* DefaultAvx512Bf16DotKernels();
// nullptr when this CPU (or compiler) has no AMX-TILE and AMX-BF16 with AVX512-BF16, or the
// kernel refused this process the tile state.
const Bf16DotKernels* AmxBf16DotKernels();
const Bf16DotKernels* AmxBf16StagedDotKernels();

// From this many tokens per call int8 weights take the staged AMX kernel (bf16 activations)
// instead of the VNNI streaming dots. Measured on a 2-core Xeon with AMX (the served layer in
// process, alternating builds; README "int8 weights"): from 2 tokens the tiles lost at 2-8 tokens
// per call on average (0.68-0.88 at 4, 0.85-1.03 at 8) and won from 12 (1.0-1.18); from 10 they
// beat from 16 by 1.03-1.16 at 12-32 tokens per call on average.
inline constexpr int64_t kInt8StagedMinTokens = 10;

// For a call of `tokens` tokens: AMX where this process has it and `allow_amx` (staged from its
// min_tokens on), else AVX512-BF16 where it pays off (DefaultAvx512Bf16DotKernels); nullptr
// without either.
inline const Bf16DotKernels* BestBf16DotKernels(bool allow_amx, int64_t tokens) {
  if (allow_amx && AmxBf16DotKernels() != nullptr) {
    const Bf16DotKernels* staged = AmxBf16StagedDotKernels();
    return tokens >= staged->min_tokens ? staged : AmxBf16DotKernels();
  }
  return DefaultAvx512Bf16DotKernels();
}

// For int8 weights in a call of `tokens` tokens: the staged AMX kernel where this process has it,
// `allow_amx` and tokens ≥ its int8_min_tokens, else nullptr.
inline const Bf16DotKernels* Int8Bf16DotKernels(bool allow_amx, int64_t tokens) {
  const Bf16DotKernels* staged = allow_amx ? AmxBf16StagedDotKernels() : nullptr;
  return staged != nullptr && staged->dots_int8 != nullptr && tokens >= staged->int8_min_tokens
             ? staged
             : nullptr;
}

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_BF16_DOT_KERNEL_H_
