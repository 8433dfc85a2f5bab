// The SwiGLU expert FFN of every served family: y = down( silu(gate·x) ⊙ (up·x) ), on weights in
// any storage kind (common/kernels/swiglu_weights.h).
//
// Two paths, picked by token count (DESIGN.md §8). The streaming kernel reads each weight once for
// all tokens (AVX-512 or AVX2 when the CPU has it, portable C++ otherwise), split over the caller's
// kernel thread pool (common/kernels/thread_pool.h): at few tokens the FFN is bound by DRAM
// bandwidth and this is what gets near it. From the switch point below on, OpenBLAS sgemm does the
// three projections (common/kernels/blas_kernels.h; BF16 weights are widened block by block into
// scratch, int8 ones dequantised the same way).
//
// A third path, for BF16 weights on a CPU with AVX512-BF16 from its kernels' min_tokens on,
// rounds x and the hidden activations to bf16 and multiplies them with the bf16 weights, summing
// in float32 (common/kernels/bf16_dot_kernel.h): with AMX tiles where the CPU has AMX-BF16, else
// two products per AVX512-BF16 instruction (about twice the FLOP/s of the float32 kernels where
// the FFN is compute bound). Its error against the exact result
// is stated in README.md (bf16 activations round each x and each activation by at most 2^-9).
// Int8 weights on a CPU with AVX512-VNNI or AVX2: the streaming dots round x and the hidden
// activations to int16 per token (Int8ActivationLevels, common/kernels/row_dot_kernel.h) and sum
// int8 · int16 products exactly in int32, instead of widening every weight to float32.
// The MOE_KERNELS environment variable (auto, avx512bf16, avx512, avx2, portable; read once per
// process) caps the instruction sets every call may use, as the options below do per call;
// MOE_ONE_TOKEN_STREAMS (1 or 4) sets how many weight streams a thread reads at once for one token
// (OneTokenStreamsFromEnv, common/kernels/row_dot_kernel.h).
//
// Input layout: the streaming kernel reads token rows SwigluInputStride(d_model) floats apart with
// zeros in columns [d_model, stride) (BF16 dots read whole 16-column chunks). An x with exactly
// that stride and zero padding is read in place; any other x is first copied into that layout.
// A caller that gathers rows anyway (an expert shard) gathers straight into it and saves the copy.
//
// Errors: InvalidArgument if x or y is not [M, d_model] or MOE_KERNELS or MOE_ONE_TOKEN_STREAMS
// is not a known value;
// FailedPrecondition for a forced path the weights or the CPU cannot run. Thread-safe: weights are
// read-only and each call uses its own scratch.
#ifndef MOE_COMMON_KERNELS_SWIGLU_FFN_H_
#define MOE_COMMON_KERNELS_SWIGLU_FFN_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/kernels/swiglu_weights.h"
#include "common/tensor/matrix.h"

namespace moe {

class KernelThreadPool;

// The row stride (in floats) the streaming kernel reads x with: d_model rounded up to a multiple
// of 16, plus 16 so the token rows of a tile do not all fall into one L1 set when d_model is a
// multiple of 4 KB. Columns [d_model, stride) must hold zeros.
int64_t SwigluInputStride(int64_t d_model);

// Switch points: the token count from which SwigluForward uses OpenBLAS instead of the streaming
// kernel, per storage. Which pair of implementations competes depends on the machine; the figures
// behind each pair were measured with bench/moe_kernels_bench on a 2-core Zen 5 (bench/README.md).
// OpenBLAS runs int8 weights dequantised block by block into float32 scratch, which the SIMD
// streaming kernels beat at every token count measured, up to 1024: the AVX-512 ones (VNNI's int16
// dots, or the int8 rows widened in registers) on a Zen 5 and an Intel Xeon, the AVX2 int16 dots
// (forced, beside OpenBLAS's Haswell kernels) on the Zen 5. With them int8 never switches.
struct SwigluSwitchPoint {
  int64_t f32;
  int64_t bf16;
  int64_t int8;
};
inline constexpr int64_t kSwigluNeverBlas = INT64_MAX;
// AVX-512 kernel vs. OpenBLAS's AVX2 sgemm (0.3.21's default on Zen 5): the kernel always won.
inline constexpr SwigluSwitchPoint kSwitchAvx512VsAvx2Blas = {kSwigluNeverBlas, kSwigluNeverBlas,
                                                              kSwigluNeverBlas};
// AVX-512 kernel vs. OpenBLAS with AVX-512 sgemm (e.g. OPENBLAS_CORETYPE=SkylakeX).
inline constexpr SwigluSwitchPoint kSwitchAvx512VsAvx512Blas = {96, 192, kSwigluNeverBlas};
// AVX2 kernel vs. OpenBLAS's AVX2 sgemm, on CPUs without AVX-512 (f32 and bf16 measured on a 2-core
// Zen 3).
inline constexpr SwigluSwitchPoint kSwitchAvx2 = {64, 512, kSwigluNeverBlas};
// Portable kernel (no AVX2) vs. OpenBLAS.
inline constexpr SwigluSwitchPoint kSwitchPortable = {16, 16, 16};

// The switch point in effect in this process for `storage`: by which streaming kernels run
// (BestRowDotKernels(allow_avx512, false, allow_avx2)) and whether OpenBLAS runs AVX-512 sgemm.
// Int8 weights on a CPU with AMX (AMX not capped or disallowed) never switch either: from
// kInt8StagedMinTokens tokens SwigluForward takes the bf16-activation path on the staged AMX-BF16
// tiles (bf16_dot_kernel.h), below that it streams them.
int64_t SwigluBlasMinTokens(WeightStorage storage, bool allow_avx512 = true,
                            bool allow_avx2 = true);

// BF16 weights, AVX512-BF16 available: the token count from which SwigluForward takes the
// bf16-activation path in this process (the min_tokens of its kernels, bf16_dot_kernel.h); 0 when
// this CPU has no AVX512-BF16. Not capped by MOE_KERNELS.
int64_t SwigluBf16DotMinTokens();

// A cap on the instruction sets SwigluForward may use: "auto" (or empty: none), "avx512bf16"
// (no AMX; the same as auto on CPUs without it), "avx512" (no AVX512-BF16 or AVX512-VNNI), "avx2"
// (no AVX-512: what an AVX2 CPU runs, int16 int8 dots included), "portable" (no SIMD beyond the
// compiler's baseline). InvalidArgument naming the accepted values for anything else. Ordered:
// each value allows less than the one before.
enum class SwigluKernelCap { kAuto, kAvx512Bf16, kAvx512, kAvx2, kPortable };
absl::StatusOr<SwigluKernelCap> ParseSwigluKernelCap(absl::string_view value);
// The cap in the MOE_KERNELS environment variable (unset: kAuto), parsed once per process; every
// SwigluForward call fails with its error if it is not a known value.
absl::StatusOr<SwigluKernelCap> SwigluKernelCapFromEnv();

// Which kernels SwigluForward runs in this process for `storage` (under MOE_KERNELS), for a startup
// log, e.g. "avx512 streaming (one token: 4 weight streams per thread); amx-bf16 (bf16
// activations) from 2 tokens per call". The error of SwigluKernelCapFromEnv or
// OneTokenStreamsFromEnv if either variable is not a known value.
absl::StatusOr<std::string> SwigluKernelSummary(WeightStorage storage);

enum class SwigluPath { kAuto, kStreaming, kBlas, kBf16Dot };

// What one SwigluForward call did, for tests and benchmarks.
struct SwigluReport {
  SwigluPath path = SwigluPath::kAuto;  // the path taken: kStreaming, kBlas or kBf16Dot
  // The kernels used: "amx-bf16", "amx-bf16-staged" (also int8 weights) or "avx512bf16" on
  // kBf16Dot, else the row-dot kernels: "avx512vnni" or "avx2-int16" (int8 weights), "avx512",
  // "avx2" or "portable".
  const char* kernels = "";
  int one_token_streams = 1;  // the row-dot kernels' weight streams per thread for one token
  bool copied_input = false;  // x was copied into the streaming kernel's layout
};

struct SwigluOptions {
  // kAuto: by token count, see above. kBf16Dot fails (FailedPrecondition) for F32 weights or
  // without AVX512-BF16.
  SwigluPath path = SwigluPath::kAuto;
  bool allow_avx512 = true;       // false: no AVX-512 (the AVX2 kernels, no AVX512-BF16 or VNNI)
  bool allow_avx2 = true;         // false with allow_avx512 false: the portable kernels
  bool allow_avx512_bf16 = true;  // false: never the bf16-activation path
  bool allow_amx = true;          // false: no AMX tiles (bf16 activations or int8 dots)
  bool allow_int16_dots = true;   // false: int8 dots widen to float32 (no int16 activations)
  // Weight streams per thread in one-token dots (row_dot_kernel.h): 1 or 4; 0, the process's
  // (MOE_ONE_TOKEN_STREAMS, else this CPU's default). Anything else fails (InvalidArgument).
  int one_token_streams = 0;
  // The streaming path's threads (the caller's plus the pool's helpers); nullptr: the calling
  // thread only. Not owned.
  KernelThreadPool* pool = nullptr;
  SwigluReport* report = nullptr;  // if set, filled in on success
};

// x [M, d_model] → y [M, d_model]; any row strides.
absl::Status SwigluForward(const SwigluWeights& weights, ConstMatrixView x, MatrixView y,
                           const SwigluOptions& options = SwigluOptions());

// The path SwigluForward takes for a call of `tokens` tokens with these options (never kAuto):
// kBlas runs on OpenBLAS's own threads, the others on the calling thread and options.pool.
// SwigluForward's errors of options and MOE_KERNELS.
absl::StatusOr<SwigluPath> SwigluPathFor(const SwigluWeights& weights, int64_t tokens,
                                         const SwigluOptions& options = SwigluOptions());

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_SWIGLU_FFN_H_
