// The SwiGLU expert FFN of every served family: y = down( silu(gate·x) ⊙ (up·x) ).
// Weights are stored as nn.Linear does ([out, in]), in float32 or in bfloat16 (half the bytes; the
// kernels widen them exactly to float32 on the fly, so only the weights are rounded, never x or
// the sums).
//
// Two paths, picked by token count (DESIGN.md §8). The streaming kernel reads each weight once for
// all tokens (AVX-512 when the CPU has it, portable C++ otherwise), split over the kernel thread
// pool (see common/thread_pool.h for the policy with concurrent callers): at few tokens the FFN is
// bound by DRAM bandwidth and this is what gets near it. From the measured switch point below on,
// OpenBLAS sgemm does the three projections (common/blas_kernels.h; BF16 weights are widened block
// by block into scratch). On Zen 5 with Debian's OpenBLAS 0.3.21 the AVX-512 kernel also out-runs
// OpenBLAS's (AVX2) sgemm at every measured token count, so there BLAS only serves CPUs without
// AVX-512, or OpenBLAS builds with AVX-512 sgemm.
//
// Thread-safe: weights are read-only and each call uses its own scratch.
#ifndef MOE_COMMON_KERNELS_SWIGLU_FFN_H_
#define MOE_COMMON_KERNELS_SWIGLU_FFN_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/tensor/bf16_matrix.h"
#include "common/tensor/dtype.h"
#include "common/tensor/matrix.h"

namespace moe {

class KernelThreadPool;

struct SwigluWeights {
  // Which set below holds the weights; the other set is empty.
  DType storage = DType::kF32;
  // F32 storage.
  Matrix gate;  // [width, d_model]
  Matrix up;    // [width, d_model]
  Matrix down;  // [d_model, width]
  // BF16 storage: bf16 bit patterns in the same layouts.
  Bf16Matrix gate_bf16;
  Bf16Matrix up_bf16;
  Bf16Matrix down_bf16;

  // Takes float32 weights; storage kBF16 rounds each to nearest bf16 (ties to even), kF32 keeps
  // them. InvalidArgument for inconsistent shapes or storage kF16 (no F16 kernels).
  static absl::StatusOr<SwigluWeights> FromF32(Matrix gate, Matrix up, Matrix down,
                                               DType storage = DType::kF32);
  // Keeps bf16 bits exactly (e.g. a BF16 checkpoint). InvalidArgument for inconsistent shapes.
  static absl::StatusOr<SwigluWeights> FromBf16(Bf16Matrix gate, Bf16Matrix up, Bf16Matrix down);

  int64_t d_model() const { return storage == DType::kBF16 ? gate_bf16.cols() : gate.cols(); }
  int64_t width() const { return storage == DType::kBF16 ? gate_bf16.rows() : gate.rows(); }
  // Bytes of weight storage (what one token-batch reads from memory).
  int64_t bytes() const;
  // OK when the set named by `storage` has the shapes above (SwigluForward checks this each call).
  absl::Status CheckShapes() const;
};

// Switch points: the token count from which SwigluForward uses OpenBLAS instead of the streaming
// kernel, per storage. Measured on the bench shape (d_model 1024, width 2816, 8 experts rotating so
// weights come from DRAM, 2 kernel and 2 BLAS threads, 2-core Zen 5), median of 3-5 randomly
// interleaved repetitions of
//   build-kernels/bench/moe_kernels_bench --benchmark_filter=BM_Switch
//     --benchmark_repetitions=5 --benchmark_enable_random_interleaving=true
// at M = 1, 2, 4, 8, 12, ..., 64, 96, 128, 192, 256, 512, 1024; the switch is the smallest M from
// which BLAS won at every larger M. Which pair of implementations competes depends on the machine:
struct SwigluSwitchPoint {
  int64_t f32;
  int64_t bf16;
};
inline constexpr int64_t kSwigluNeverBlas = INT64_MAX;
// AVX-512 kernel vs. OpenBLAS 0.3.21's default on Zen 5 (it picks its AVX2 "Haswell" sgemm): the
// kernel won at every M up to 1024 (f32 M=64: 3.9 vs 6.1 ms; M=256: 15.5 vs 20.7 ms; M=1024: 59 vs
// 81 ms), so BLAS is never used.
inline constexpr SwigluSwitchPoint kSwitchAvx512VsAvx2Blas = {kSwigluNeverBlas, kSwigluNeverBlas};
// AVX-512 kernel vs. OpenBLAS with AVX-512 sgemm (e.g. OPENBLAS_CORETYPE=SkylakeX): f32 tied at
// M=64 (4.5 vs 4.6 ms), BLAS won from M=96 (5.8 vs 9.7 ms); bf16 (BLAS path widens blocks) the
// kernel won up to 128 (7.4 vs 8.8 ms), BLAS from 192 (10.8 vs 12.2 ms).
inline constexpr SwigluSwitchPoint kSwitchAvx512VsAvx512Blas = {96, 192};
// Portable kernel (no AVX-512) vs. OpenBLAS: f32 M=12 5.0 vs 5.3 ms, BLAS from 16 (2.7 vs 6.4 ms);
// bf16 M=12 5.1 vs 6.8 ms, BLAS from 16 (4.9 vs 6.1 ms).
inline constexpr SwigluSwitchPoint kSwitchPortable = {16, 16};

// The switch point in effect in this process for `storage`: by whether the streaming kernel runs
// AVX-512 (the CPU has it and `allow_avx512`) and whether OpenBLAS runs AVX-512 sgemm.
int64_t SwigluBlasMinTokens(DType storage, bool allow_avx512 = true);

enum class SwigluPath { kAuto, kStreaming, kBlas };

struct SwigluOptions {
  SwigluPath path = SwigluPath::kAuto;  // kAuto: by token count, see above
  bool allow_avx512 = true;             // false forces the portable kernels (tests)
  KernelThreadPool* pool = nullptr;     // streaming path; nullptr: SharedKernelPool()
};

// x [M, d_model] → y [M, d_model]. InvalidArgument if shapes disagree.
absl::Status SwigluForward(const SwigluWeights& weights, ConstMatrixView x, MatrixView y);
absl::Status SwigluForward(const SwigluWeights& weights, ConstMatrixView x, MatrixView y,
                           const SwigluOptions& options);

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_SWIGLU_FFN_H_
