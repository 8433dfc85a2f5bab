// Helpers shared by the SwiGLU kernel tests: random weights and tokens, the int16 kernel sets this
// CPU runs, and a triple-loop reference in double with the tolerance the kernels must meet.
//
// Tolerance: for every token t, max_i |y[t][i] − ref[t][i]| ≤ 1e-5 · ‖ref[t]‖₂. For BF16 storage
// the reference uses the bf16-rounded weights (widened exactly), so the same bound applies: the
// kernels only add float32 rounding of the sums. Likewise for int8 storage, with the dequantised
// weights (scale · q).
#ifndef MOE_TESTS_SWIGLU_TEST_UTIL_H_
#define MOE_TESTS_SWIGLU_TEST_UTIL_H_

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "common/kernels/row_dot_kernel.h"
#include "common/kernels/swiglu_ffn.h"
#include "common/kernels/swiglu_weights.h"
#include "common/tensor/matrix.h"
#include "gtest/gtest.h"

namespace moe {

inline constexpr double kSwigluTolerance = 1e-5;
// The same for the int16 int8 streaming dots (VNNI, AVX2), which round x and the hidden
// activations to int16 per token (~3e-5 of each token's largest value;
// common/kernels/row_dot_kernel.h).
inline constexpr double kInt16SwigluTolerance = 2e-4;
// The same for the bf16-activation path (x and the hidden activations rounded to bf16, 2^-9 of
// each value): per token, a few times the ~3e-3 RMS error of the path (swiglu_bf16_path_test.cc,
// which holds it to an element-wise bound) over √d_model.
inline constexpr double kBf16ActivationSwigluTolerance = 5e-3;

// The tolerance of a call that reported `report`.
inline double SwigluToleranceOf(const SwigluReport& report) {
  const std::string kernels = report.kernels;
  if (report.path == SwigluPath::kBf16Dot) return kBf16ActivationSwigluTolerance;
  return report.path == SwigluPath::kStreaming &&
                 (kernels == "avx512vnni" || kernels == "avx2-int16")
             ? kInt16SwigluTolerance
             : kSwigluTolerance;
}

// The kernel sets with int16 dots for int8 weights that this CPU runs (AVX512-VNNI and AVX2, each
// with one and with four weight streams per one-token dot).
inline std::vector<const RowDotKernels*> Int16Sets() {
  std::vector<const RowDotKernels*> sets;
  for (const RowDotKernels* set : {Avx512VnniRowDotKernels(1), Avx512VnniRowDotKernels(4),
                                   Avx2Int16RowDotKernels(1), Avx2Int16RowDotKernels(4)}) {
    if (set != nullptr) sets.push_back(set);
  }
  return sets;
}

// A kernel set's name and, where it has a choice, its weight streams per one-token dot.
inline std::string KernelSetName(const RowDotKernels& set) {
  return set.one_token_streams > 1
             ? std::string(set.name) + " (" + std::to_string(set.one_token_streams) + " streams)"
             : std::string(set.name);
}

inline Matrix RandomMatrix(int64_t rows, int64_t cols, float scale, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  Matrix m(rows, cols);
  for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = scale * dist(rng);
  return m;
}

inline SwigluWeights RandomWeights(int64_t d_model, int64_t width, std::mt19937& rng,
                                   WeightStorage storage = WeightStorage::kF32) {
  const float in_scale = 1.0f / std::sqrt(static_cast<float>(d_model));
  const float hidden_scale = 1.0f / std::sqrt(static_cast<float>(width));
  auto w = SwigluWeights::FromF32(RandomMatrix(width, d_model, in_scale, rng),
                                  RandomMatrix(width, d_model, in_scale, rng),
                                  RandomMatrix(d_model, width, hidden_scale, rng), storage);
  EXPECT_TRUE(w.ok()) << w.status();
  return *std::move(w);
}

// The weights' exact float32 values, whatever the storage (int8: dequantised, scale · q).
inline SwigluWeights::F32 Widened(const SwigluWeights& w) {
  if (const SwigluWeights::F32* f32 = w.f32()) return *f32;
  if (const SwigluWeights::Int8* int8 = w.int8()) {
    return {int8->gate.ToF32(), int8->up.ToF32(), int8->down.ToF32()};
  }
  const SwigluWeights::Bf16& bf16 = *w.bf16();
  return {bf16.gate.ToF32(), bf16.up.ToF32(), bf16.down.ToF32()};
}

// y = down( silu(gate·x) ⊙ (up·x) ) with plain loops in double; y is [x.rows, d] packed.
inline std::vector<double> ReferenceSwiglu(const SwigluWeights::F32& w, ConstMatrixView x) {
  const int64_t d = w.gate.cols(), h = w.gate.rows();
  std::vector<double> y(x.rows * d, 0.0);
  std::vector<double> hidden(h);
  for (int64_t t = 0; t < x.rows; ++t) {
    for (int64_t j = 0; j < h; ++j) {
      double g = 0, u = 0;
      for (int64_t i = 0; i < d; ++i) {
        g += static_cast<double>(w.gate.row(j)[i]) * x.row(t)[i];
        u += static_cast<double>(w.up.row(j)[i]) * x.row(t)[i];
      }
      hidden[j] = g / (1.0 + std::exp(-g)) * u;
    }
    for (int64_t o = 0; o < d; ++o) {
      double acc = 0;
      for (int64_t j = 0; j < h; ++j) acc += static_cast<double>(w.down.row(o)[j]) * hidden[j];
      y[t * d + o] = acc;
    }
  }
  return y;
}

// Checks the tolerance stated at the top (or `tolerance`), token by token.
inline void ExpectMatches(ConstMatrixView y, const std::vector<double>& want,
                          const std::string& what, double tolerance = kSwigluTolerance) {
  const int64_t d = y.cols;
  for (int64_t t = 0; t < y.rows; ++t) {
    double norm2 = 0, max_err = 0;
    for (int64_t i = 0; i < d; ++i) {
      norm2 += want[t * d + i] * want[t * d + i];
      max_err = std::max(max_err, std::abs(static_cast<double>(y.row(t)[i]) - want[t * d + i]));
    }
    ASSERT_GT(norm2, 0.0) << what;
    ASSERT_LE(max_err, tolerance * std::sqrt(norm2)) << what << ", token " << t;
  }
}

}  // namespace moe

#endif  // MOE_TESTS_SWIGLU_TEST_UTIL_H_
