// The two implementations behind SwigluForward (common/swiglu_ffn.h), which checks shapes and picks
// one by token count. Both take weights whose shapes were checked, x [M, d] and y [M, d] with
// M ≥ 1 and width ≥ 1, and are thread-safe.
#ifndef MOE_COMMON_KERNELS_SWIGLU_PATHS_H_
#define MOE_COMMON_KERNELS_SWIGLU_PATHS_H_

#include "absl/status/status.h"
#include "common/kernels/row_dot_kernel.h"
#include "common/kernels/swiglu_ffn.h"
#include "common/kernels/thread_pool.h"
#include "common/tensor/matrix.h"

namespace moe {

// Few tokens: streams every weight once for all tokens. Phase 1 dots each block of gate and up
// rows with every token and applies silu⊙ while the block's sums are in L1; phase 2 streams the
// down rows against the activations [M, width] (L1/L2). Rows are shared out on `pool` in guided
// chunks (run inline for experts too small to be worth waking a helper).
absl::Status SwigluStreaming(const SwigluWeights& weights, ConstMatrixView x, MatrixView y,
                             const RowDotKernels& kernels, KernelThreadPool* pool);

// Many tokens: OpenBLAS sgemm for the gate, up and down projections. BF16 weights are widened into
// a float32 scratch block of rows at a time, each followed by its sgemm.
absl::Status SwigluBlas(const SwigluWeights& weights, ConstMatrixView x, MatrixView y,
                        const RowDotKernels& kernels);

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_SWIGLU_PATHS_H_
