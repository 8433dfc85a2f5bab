// The inner loops of the FFN kernels, in six builds: AVX-512, AVX-512 with VNNI's int8 dots, AVX2,
// AVX2 with int16 int8 dots (each chosen at run time when the CPU has it; compiled with a target
// pragma, so no -march flag is needed) and portable C++. Stateless and thread-safe. Internal to the
// FFN kernels; SwigluForward is the public face.
//
// The dots read each weight row from memory once for all tokens: rows are taken four at a time and
// dotted with up to six tokens at once (24 accumulators in AVX-512's registers; AVX2's hold 3 × 4
// or 2 × 4); more tokens are split into even tiles that re-read the same four rows from L1 or L2,
// never from DRAM. One token's dots read `one_token_streams` contiguous runs of weights at once
// (OneTokenStreamsFromEnv below): 1 takes float32 rows (BF16 and int8 quads) one after the other,
// 4 takes four of them side by side, one from each of four parts of the call's rows, each a
// contiguous run (but the AVX2 sets' float32 rows, read in the four-row tile, and their int8 quads
// on float32 activations, one stream either way); the VNNI int8 dots of 2 tokens read their
// four parts too, and 3 or more one quad at a time in either set; with 4, the AVX-512 sets' BF16
// and int8 quads of 2-3 tokens read two parts side by side, and their float32 rows of 2-12 tokens
// four parts, each row dotted with every token (x from L1; past 5 tokens in passes of at most 5).
// With one stream, the AVX-512 sets read float32 rows of 2 tokens one at a time too, each dotted
// with every token (x from L1) instead of in the four-row tile. BF16 and int8 rows are widened to
// float32 in registers (exact), so x and all sums stay float32; an int8 row's sums are multiplied
// by its scale at the end. The int16 sets' int8 dots (VNNI: vpdpwssd, AVX2: vpmaddwd) instead round
// the activations to int16 (per token: x ≈ x_scale · xq, |xq| ≤ Int8ActivationLevels(k)) and sum q
// · xq exactly in int32: the activations' rounding (~1/33 000 of each token's largest value) is
// their only error.
#ifndef MOE_COMMON_KERNELS_ROW_DOT_KERNEL_H_
#define MOE_COMMON_KERNELS_ROW_DOT_KERNEL_H_

#include <algorithm>
#include <cstdint>

#include "absl/status/statusor.h"

namespace moe {

// The int16 levels activations are rounded to for int8 dots over k columns: 16 383, fewer past
// k = 8 256, so that no int32 lane of the VNNI dots (k / 8 products of at most 127 · levels each)
// can overflow.
inline int64_t Int8ActivationLevels(int64_t k) {
  return std::min<int64_t>(16383, int64_t{2147483647} / (127 * ((k + 7) / 8)));
}

struct RowDotKernels {
  const char* name;  // "avx512vnni", "avx512", "avx2-int16", "avx2" or "portable"
  // out[t * ldo + r] = Σ_{i<k} w[r * ldw + i] · x[t * ldx + i] for r < rows, t < tokens.
  void (*dots_f32)(const float* w, int64_t ldw, int64_t rows, int64_t k, const float* x,
                   int64_t ldx, int64_t tokens, float* out, int64_t ldo);
  // The same for `rows` rows of a Bf16Matrix starting at quad `quads` (common/bf16_matrix.h),
  // k = its padded_cols(). x rows must hold k finite values (zeros past the real columns).
  void (*dots_bf16)(const uint16_t* quads, int64_t rows, int64_t k, const float* x, int64_t ldx,
                    int64_t tokens, float* out, int64_t ldo);
  // act[i] = silu(gate[i]) · up[i] = gate[i] / (1 + e^−gate[i]) · up[i] for i < n.
  void (*silu_mul)(const float* gate, const float* up, float* act, int64_t n);
  // Rows [0, rows) of a Bf16Matrix starting at quad `quads` (stride k = padded_cols()) as float32:
  // out[r * ldo + c] for c < cols.
  void (*unpack_bf16)(const uint16_t* quads, int64_t rows, int64_t k, int64_t cols, float* out,
                      int64_t ldo);
  // The same as dots_bf16 for `rows` rows of an Int8Matrix (common/kernels/int8_matrix.h) starting
  // at quad `quads`, with `scales` the scales of those rows:
  // out[t * ldo + r] = scales[r] · Σ_{i<k} q[r][i] · x[t * ldx + i].
  void (*dots_int8)(const int8_t* quads, const float* scales, int64_t rows, int64_t k,
                    const float* x, int64_t ldx, int64_t tokens, float* out, int64_t ldo);
  // As unpack_bf16, for an Int8Matrix: the dequantised values scales[r] · q[r][c].
  void (*unpack_int8)(const int8_t* quads, const float* scales, int64_t rows, int64_t k,
                      int64_t cols, float* out, int64_t ldo);
  // The int16 sets only (null in the others). Rounds each token's k values (x[t * ldx + i]) to
  // xq[t * ldq + i] with x ≈ x_scales[t] · xq, |xq| ≤ Int8ActivationLevels(k); *finite = false
  // (and xq incomplete) when any value is not finite (a NaN too, beside finite ones).
  void (*quantize_activations)(const float* x, int64_t ldx, int64_t tokens, int64_t k, int16_t* xq,
                               int64_t ldq, float* x_scales, bool* finite) = nullptr;
  // dots_int8 over rounded activations: out[t * ldo + r] = scales[r] · x_scales[t] ·
  // Σ_{i<k} q[r][i] · xq[t * ldq + i], the sum exact (int32 lanes, added in double).
  void (*dots_int8_quantized)(const int8_t* quads, const float* scales, int64_t rows, int64_t k,
                              const int16_t* xq, int64_t ldq, const float* x_scales, int64_t tokens,
                              float* out, int64_t ldo) = nullptr;
  // Weight streams each one-token dot reads at once (the AVX-512 and AVX2 sets: 1 or 4; the
  // portable one: 1). The AVX2 sets read int8 quads on float32 activations as one stream either
  // way.
  int one_token_streams = 1;
};

// How many weight streams a thread reads at once in a one-token dot, the AVX-512 and AVX2 sets'
// choice. One core's read rate from DRAM depends on it, by CPU: a Zen 4 core read one stream of
// rows 1.35-1.42x faster than four neighbouring rows side by side, with the AVX-512 kernels as with
// the AVX2 ones (a Zen 4 guest whose hypervisor hides AVX-512: 1.30-1.41x); an Intel Xeon (Sapphire
// Rapids class) core read ~1.6x faster from four neighbouring streams than from one, and so did a
// Zen 3 (two cores' one-token float32 dots 1.44x); a Zen 5 read four parts 1.1-1.2x faster than
// one stream (README "One token: weight streams per thread"). The environment variable
// MOE_ONE_TOKEN_STREAMS (1 or 4; read once per process) sets it; unset, DefaultOneTokenStreams of
// this CPU. InvalidArgument, naming the variable, for any other value.
absl::StatusOr<int> OneTokenStreamsFromEnv();
// The streams this process reads: OneTokenStreamsFromEnv(), or this CPU's default where the
// variable is invalid (SwigluForward reports that error; the kernel sets still need a choice).
int ProcessOneTokenStreams();
// What CPUID says of a CPU, as far as the default above needs it.
struct CpuIdentity {
  bool amd = false;
  unsigned family = 0;  // base family + extended family
  unsigned model = 0;   // extended model << 4 | base model
  bool avx512f = false;
};
CpuIdentity ThisCpu();
// 1 on AMD Zen 4 cores (family 25 with AVX-512, or a Zen 4 model number: 0x10-0x1f, 0x60-0x7f,
// 0xa0-0xaf, since a hypervisor may hide AVX-512 from a guest), 4 on every other CPU.
int DefaultOneTokenStreams(const CpuIdentity& cpu);
inline constexpr int kOneTokenStreamChoices[] = {1, 4};

const RowDotKernels& PortableRowDotKernels();
// nullptr when this CPU (or compiler) has no AVX-512F/BW/VL/DQ, or `one_token_streams` is not one
// of kOneTokenStreamChoices.
const RowDotKernels* Avx512RowDotKernels(int one_token_streams = 1);
// The AVX-512 set with the int8 dots above; nullptr without AVX512-VNNI too.
const RowDotKernels* Avx512VnniRowDotKernels(int one_token_streams = 1);
// nullptr when this CPU (or compiler) has no AVX2 and FMA, or `one_token_streams` is not one of
// kOneTokenStreamChoices. The default, 4, is what CPUs without AVX-512 read by default (Zen 4
// cores whose AVX-512 a hypervisor hides read 1: DefaultOneTokenStreams).
const RowDotKernels* Avx2RowDotKernels(int one_token_streams = 4);
// The AVX2 set with int16 int8 dots as above; nullptr as Avx2RowDotKernels.
const RowDotKernels* Avx2Int16RowDotKernels(int one_token_streams = 4);
// The fastest set this CPU runs within the caps: `allow_avx512` = false, an AVX2 set (or the
// portable one without AVX2); `allow_avx2` = false too, the portable one. An int16 set (VNNI, or
// below AVX-512 the AVX2 one) only with `allow_int16_dots` (they differ in the int8 dots alone,
// which SwigluForward asks them for, for int8 weights). The AVX-512 and AVX2 sets read
// `one_token_streams` (one of kOneTokenStreamChoices; anything else, e.g. the default 0:
// ProcessOneTokenStreams()).
const RowDotKernels& BestRowDotKernels(bool allow_avx512 = true, bool allow_int16_dots = false,
                                       bool allow_avx2 = true, int one_token_streams = 0);

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_ROW_DOT_KERNEL_H_
