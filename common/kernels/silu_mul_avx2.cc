// AVX2 build of RowDotKernels::silu_mul (silu_mul_avx2.h), compiled for AVX2 + FMA through
// MOE_ISA_TARGET_BEGIN (isa_target.h).
#include "common/kernels/silu_mul_avx2.h"

#if defined(__x86_64__) && defined(__GNUC__)

#include <immintrin.h>

#include <algorithm>

#include "common/kernels/exp_polynomial.h"
#include "common/kernels/isa_target.h"

MOE_ISA_TARGET_BEGIN("avx2,fma")

namespace moe {
namespace {

constexpr int kLanes = 8;  // floats per ymm register

// e^x to about 1 ulp (Cephes expf's polynomial). x is clamped to [−87, 88] so that 2^n, built
// in the exponent bits, stays a normal float: e^−87 is already negligible beside the 1 it is
// added to in SiluMul8, and e^88 (1.65e38) is finite.
inline __m256 Exp(__m256 x) {
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.0f)), _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(exp_polynomial::kLog2E)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(exp_polynomial::kLn2High), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(exp_polynomial::kLn2Low), r);
  __m256 p = _mm256_set1_ps(exp_polynomial::kP[0]);
#pragma GCC unroll 5
  for (int i = 1; i < 6; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(exp_polynomial::kP[i]));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i biased = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
  return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(biased, 23)));
}

inline __m256 SiluMul8(__m256 g, __m256 u) {
  const __m256 denom =
      _mm256_add_ps(_mm256_set1_ps(1.0f), Exp(_mm256_sub_ps(_mm256_setzero_ps(), g)));
  return _mm256_div_ps(_mm256_mul_ps(g, u), denom);
}

}  // namespace

void SiluMulAvx2(const float* gate, const float* up, float* act, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm256_storeu_ps(act + i, SiluMul8(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
  }
  if (i < n) {  // the last n - i < 8 values, through zero-padded lanes
    alignas(32) float g[kLanes] = {}, u[kLanes] = {}, a[kLanes];
    std::copy(gate + i, gate + n, g);
    std::copy(up + i, up + n, u);
    _mm256_store_ps(a, SiluMul8(_mm256_load_ps(g), _mm256_load_ps(u)));
    std::copy(a, a + (n - i), act + i);
  }
}

}  // namespace moe

MOE_ISA_TARGET_END()

#endif
