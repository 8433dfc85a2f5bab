// AVX-512 build of RowDotKernels::silu_mul (silu_mul_avx512.h), compiled for AVX-512F/BW/VL/DQ +
// FMA through MOE_ISA_TARGET_BEGIN (isa_target.h).
#include "common/kernels/silu_mul_avx512.h"

#if defined(__x86_64__) && defined(__GNUC__)

#include <immintrin.h>

#include "common/kernels/exp_polynomial.h"
#include "common/kernels/isa_target.h"

MOE_ISA_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,fma")

namespace moe {
namespace {

// e^x to about 1 ulp (Cephes expf's polynomial); vscalefps applies 2^n and saturates to 0 / inf.
inline __m512 Exp(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(100.0f)), _mm512_set1_ps(-100.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(exp_polynomial::kLog2E)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(exp_polynomial::kLn2High), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(exp_polynomial::kLn2Low), r);
  __m512 p = _mm512_set1_ps(exp_polynomial::kP[0]);
#pragma GCC unroll 5
  for (int i = 1; i < 6; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(exp_polynomial::kP[i]));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

inline __m512 SiluMul16(__m512 g, __m512 u) {
  const __m512 denom =
      _mm512_add_ps(_mm512_set1_ps(1.0f), Exp(_mm512_sub_ps(_mm512_setzero_ps(), g)));
  return _mm512_div_ps(_mm512_mul_ps(g, u), denom);
}

}  // namespace

void SiluMulAvx512(const float* gate, const float* up, float* act, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(act + i, SiluMul16(_mm512_loadu_ps(gate + i), _mm512_loadu_ps(up + i)));
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(
        act + i, m,
        SiluMul16(_mm512_maskz_loadu_ps(m, gate + i), _mm512_maskz_loadu_ps(m, up + i)));
  }
}

}  // namespace moe

MOE_ISA_TARGET_END()

#endif
