// The AVX-512 SiLU⊙ of the AVX-512 row-dot kernels (RowDotKernels::silu_mul): act[i] =
// silu(gate[i]) · up[i] for i < n, e^x by a Cephes polynomial to about 1 ulp. Only for CPUs with
// AVX-512F/BW/VL/DQ and FMA (reached through Avx512RowDotKernels(), which checks); x86-64
// GCC/Clang builds only. Stateless and thread-safe.
#ifndef MOE_COMMON_KERNELS_SILU_MUL_AVX512_H_
#define MOE_COMMON_KERNELS_SILU_MUL_AVX512_H_

#include <cstdint>

namespace moe {

void SiluMulAvx512(const float* gate, const float* up, float* act, int64_t n);

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_SILU_MUL_AVX512_H_
