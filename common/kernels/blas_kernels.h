// The one place that calls OpenBLAS. Every wrapper checks shapes before calling into BLAS (a shape
// bug becomes an InvalidArgument, not memory corruption) and passes each view's row stride as its
// leading dimension.
//
// OpenBLAS's thread count is process-global state (its own thread pool, shared by every caller),
// so it cannot be an option of a call or an object: SetBlasThreads below is the only code that
// sets it, and each binary calls it once, from main, before serving (not left to OpenBLAS's
// default of one thread per core). Libraries never call it.
#ifndef MOE_COMMON_KERNELS_BLAS_KERNELS_H_
#define MOE_COMMON_KERNELS_BLAS_KERNELS_H_

#include <string>

#include "absl/status/status.h"
#include "common/tensor/matrix.h"

namespace moe {

// c = a · bᵀ (+ c when accumulate). a [M,K], b [N,K] (nn.Linear's [out, in] layout), c [M,N].
absl::Status MatMulTransposed(ConstMatrixView a, ConstMatrixView b, MatrixView c,
                              bool accumulate = false);

// Whether OpenBLAS picked AVX-512 sgemm kernels for this CPU (0.3.21 picks its AVX2 "Haswell"
// kernels on Zen 4/5 unless OPENBLAS_CORETYPE=SkylakeX is set). The FFN switch point depends on it.
bool BlasHasAvx512Kernels();
// OpenBLAS's name for the kernels it picked ("Haswell", "SkylakeX", ...), for reports.
std::string BlasCoreName();

// Threads OpenBLAS may use per call, for the whole process (see above); < 1 means 1.
void SetBlasThreads(int threads);
int BlasThreads();

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_BLAS_KERNELS_H_
