// The two implementations behind SwigluForward (common/kernels/swiglu_ffn.h), which checks x and y
// against the weights and picks one by token count. Both take x [M, d] and y [M, d] with M ≥ 1
// and width ≥ 1, any row strides, and are thread-safe.
#ifndef MOE_COMMON_KERNELS_SWIGLU_PATHS_H_
#define MOE_COMMON_KERNELS_SWIGLU_PATHS_H_

#include "absl/status/status.h"
#include "common/kernels/bf16_dot_kernel.h"
#include "common/kernels/row_dot_kernel.h"
#include "common/kernels/swiglu_weights.h"
#include "common/kernels/thread_pool.h"
#include "common/tensor/matrix.h"

namespace moe {

// Few tokens: streams every weight once for all tokens. Phase 1 dots each block of gate and up
// rows with every token and applies silu⊙ while the block's sums are in L1; phase 2 streams the
// down rows against the activations [M, width] (L1/L2). Rows are shared out on `pool` (nullptr:
// the calling thread only) in guided chunks; experts too small to be worth waking a helper run
// inline. Reads x in place when it has SwigluInputStride(d) and zero padding, else copies it into
// that layout first and sets *copied_input.
void SwigluStreaming(const SwigluWeights& weights, ConstMatrixView x, MatrixView y,
                     const RowDotKernels& kernels, KernelThreadPool* pool, bool* copied_input);

// Many tokens: OpenBLAS sgemm for the gate, up and down projections (x and y passed with their
// strides). BF16 weights are widened (int8 ones dequantised) into a float32 scratch block of rows
// at a time, each followed by its sgemm.
absl::Status SwigluBlas(const SwigluWeights& weights, ConstMatrixView x, MatrixView y,
                        const RowDotKernels& kernels);

// Many tokens, BF16 weights (a CPU with AVX512-BF16) or int8 weights (the staged AMX kernel's
// dots_int8): x and the activations silu(gate·x) ⊙ (up·x) are rounded to bf16 (the sums and silu⊙
// stay float32) and every projection runs on `dot` (AMX tiles or AVX512-BF16,
// common/kernels/bf16_dot_kernel.h), reading the weights in place. Phase 0 packs x into the
// kernel's layout, phase 1 computes the activations in blocks of hidden units, phase 2 the down
// projection; each is shared out on `pool` (nullptr: the calling thread only).
void SwigluBf16Dot(const SwigluWeights& weights, ConstMatrixView x, MatrixView y,
                   const Bf16DotKernels& dot, const RowDotKernels& kernels, KernelThreadPool* pool);

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_SWIGLU_PATHS_H_
