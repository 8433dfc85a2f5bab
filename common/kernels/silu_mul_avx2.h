// The AVX2 SiLU⊙ of the AVX2 row-dot kernels (RowDotKernels::silu_mul): act[i] = silu(gate[i]) ·
// up[i] for i < n, e^x by a Cephes polynomial to about 1 ulp. Only for CPUs with AVX2 and FMA
// (reached through Avx2RowDotKernels(), which checks); x86-64 GCC/Clang builds only. Stateless and
// thread-safe.
#ifndef MOE_COMMON_KERNELS_SILU_MUL_AVX2_H_
#define MOE_COMMON_KERNELS_SILU_MUL_AVX2_H_

#include <cstdint>

namespace moe {

void SiluMulAvx2(const float* gate, const float* up, float* act, int64_t n);

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_SILU_MUL_AVX2_H_
