// The one place that calls OpenBLAS. Every wrapper checks shapes before calling into BLAS (a shape
// bug becomes an InvalidArgument, not memory corruption) and passes each view's row stride as its
// leading dimension.
//
// OpenBLAS's thread count is process-global state (its own thread pool, shared by every caller),
// so it cannot be an option of a call or an object: SetBlasThreads below is the only code that
// sets it, and each binary calls it once, from main, before serving (not left to OpenBLAS's
// default of one thread per core). Libraries never call it.
//
// OpenBLAS (Debian's is built with DYNAMIC_ARCH) picks its kernels once, in a constructor that runs
// when the library loads, from CPUID or from OPENBLAS_CORETYPE when that is set. Releases older
// than the CPU fall back to weaker kernels: 0.3.21 runs SSE3 "Prescott" kernels on Sapphire/Emerald
// Rapids (sgemm 53 GF/s instead of 293 with OPENBLAS_CORETYPE=SkylakeX), as on any CPU model it
// does not know. UseBestBlasKernels (each binary calls it first thing in main) corrects that before
// anything calls BLAS.
#ifndef MOE_COMMON_KERNELS_BLAS_KERNELS_H_
#define MOE_COMMON_KERNELS_BLAS_KERNELS_H_

#include <string>

#include "absl/status/status.h"
#include "common/tensor/matrix.h"

namespace moe {

// c = a · bᵀ (+ c when accumulate). a [M,K], b [N,K] (nn.Linear's [out, in] layout), c [M,N].
// Fewer than 16 rows of a without accumulate (a router's gate for a few tokens) run the row-dot
// kernels, which read b in place; more, OpenBLAS sgemm, which packs b first.
absl::Status MatMulTransposed(ConstMatrixView a, ConstMatrixView b, MatrixView c,
                              bool accumulate = false);

// Whether OpenBLAS runs AVX-512 sgemm kernels ("SkylakeX", "Cooperlake", "SapphireRapids"). The
// FFN switch point depends on it.
bool BlasHasAvx512Kernels();
// OpenBLAS's name for the kernels it picked ("Haswell", "SkylakeX", ...), for reports.
std::string BlasCoreName();

// When OpenBLAS picked kernels weaker than the CPU runs and OPENBLAS_CORETYPE is unset (a user's
// setting always wins), re-executes this program (/proc/self/exe: same pid, arguments and
// environment, plus OPENBLAS_CORETYPE and MOE_OPENBLAS_DETECTED=<the core it had picked>) so that
// the library loads with the right kernels: SkylakeX when the CPU runs AVX-512 (F, CD, BW, DQ, VL:
// what those kernels use), else Haswell when it runs AVX2 and FMA. Returns when nothing needs
// doing, or when the re-exec failed (said on stderr; the program goes on with the kernels it has).
// Call before any thread starts; `argv` is main's. Test seam: MOE_TEST_OPENBLAS_PICKED=NAME stands
// in for the core OpenBLAS picked (a test needs a CPU that OpenBLAS does not know).
void UseBestBlasKernels(char** argv);
// Which OpenBLAS kernels run and why, for startup logs and Info: "Cooperlake", "SkylakeX
// (OPENBLAS_CORETYPE=SkylakeX; OpenBLAS alone picked Prescott)", "Haswell (OPENBLAS_CORETYPE=
// Haswell; this CPU runs OpenBLAS's AVX-512 kernels: unset it to use them)" (or "AVX2 kernels"
// on an AVX2 CPU told to run weaker ones).
std::string BlasKernelsReport();
// Every kernel choice of this process, for startup logs and Info: "OpenBLAS <BlasKernelsReport>;
// FFN kernels <the row-dot set, e.g. avx512>", then what the CPU adds, e.g. " (int8 dots:
// avx512vnni; bf16 activations: amx-bf16)".
std::string KernelsReport();

// Threads OpenBLAS may use per call, for the whole process (see above); < 1 means 1.
void SetBlasThreads(int threads);

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_BLAS_KERNELS_H_
