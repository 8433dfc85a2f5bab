// The one place that calls OpenBLAS. Every wrapper checks shapes before calling into BLAS (a shape
// bug becomes an InvalidArgument, not memory corruption), and the BLAS thread count is set here on
// purpose rather than left to OpenBLAS's default of one thread per core.
#ifndef MOE_COMMON_KERNELS_BLAS_KERNELS_H_
#define MOE_COMMON_KERNELS_BLAS_KERNELS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "common/tensor/matrix.h"

namespace moe {

// c = a · bᵀ (+ c when accumulate). a [M,K], b [N,K] (nn.Linear's [out, in] layout), c [M,N].
absl::Status MatMulTransposed(ConstMatrixView a, ConstMatrixView b, MatrixView c,
                              bool accumulate = false);

// y = a · x (sgemv). a [M,K], x [K], y [M]; InvalidArgument unless x and y have those sizes.
absl::Status MatVec(ConstMatrixView a, absl::Span<const float> x, absl::Span<float> y);

// Whether OpenBLAS picked AVX-512 sgemm kernels for this CPU (0.3.21 picks its AVX2 "Haswell"
// kernels on Zen 4/5 unless OPENBLAS_CORETYPE=SkylakeX is set). The FFN switch point depends on it.
bool BlasHasAvx512Kernels();
// OpenBLAS's name for the kernels it picked ("Haswell", "SkylakeX", ...), for reports.
std::string BlasCoreName();

// Threads OpenBLAS may use per call. Process-wide; call from main before serving.
void SetBlasThreads(int threads);
int BlasThreads();

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_BLAS_KERNELS_H_
