// The constants of the SIMD kernels' e^x (Cephes expf): e^x = 2^n · e^r with n = round(x·log2 e)
// and r = x − n·ln 2 (ln 2 split into a part exact in float32 and the rest, so r keeps its low
// bits), e^r ≈ 1 + r + r²·P(r) with P of degree 5. About 1 ulp over float32's normal range. Each
// instruction-set build (row_dot_kernel_avx512.cc, row_dot_kernel_avx2.cc) evaluates it with its
// own registers; the numbers live here once.
#ifndef MOE_COMMON_KERNELS_EXP_POLYNOMIAL_H_
#define MOE_COMMON_KERNELS_EXP_POLYNOMIAL_H_

namespace moe::exp_polynomial {

inline constexpr float kLog2E = 1.44269504088896341f;
inline constexpr float kLn2High = 0.693359375f;    // exact in float32
inline constexpr float kLn2Low = -2.12194440e-4f;  // ln 2 − kLn2High
// P(r) = ((((kP[0]·r + kP[1])·r + kP[2])·r + kP[3])·r + kP[4])·r + kP[5].
inline constexpr float kP[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

}  // namespace moe::exp_polynomial

#endif  // MOE_COMMON_KERNELS_EXP_POLYNOMIAL_H_
