// The one place that calls OpenBLAS. Every wrapper checks shapes before calling into BLAS (a shape
// bug becomes an InvalidArgument, not memory corruption), and the BLAS thread count is set here on
// purpose rather than left to OpenBLAS's default of one thread per core.
#ifndef MOE_COMMON_BLAS_KERNELS_H_
#define MOE_COMMON_BLAS_KERNELS_H_

#include "absl/status/status.h"
#include "common/matrix.h"

namespace moe {

// c = a · bᵀ (+ c when accumulate). a [M,K], b [N,K] (nn.Linear's [out, in] layout), c [M,N].
absl::Status MatMulTransposed(ConstMatrixView a, ConstMatrixView b, MatrixView c,
                              bool accumulate = false);

// Threads OpenBLAS may use per call. Process-wide; call from main before serving.
void SetBlasThreads(int threads);
int BlasThreads();

}  // namespace moe

#endif  // MOE_COMMON_BLAS_KERNELS_H_
