// The int8 row dots on their own (RowDotKernels::dots_int8, and the int16 sets' rounding and
// dots_int8_quantized) against loops in double, at rows not a multiple of four, odd and even line
// counts, token counts that fill tiles unevenly, the largest sums the levels allow, and NaNs among
// finite activations. The FFN on int8 weights: int8_kernel_test.cc.
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/kernels/int8_matrix.h"
#include "common/kernels/row_dot_kernel.h"
#include "common/tensor/matrix.h"
#include "gtest/gtest.h"
#include "tests/swiglu_test_util.h"

namespace moe {
namespace {

// The int8 row dots on their own, rows not a multiple of four, against double: the AVX-512 set
// and the AVX2 one (where the CPU has them) and the portable one give the same sums to float32
// rounding.
TEST(Int8RowDotTest, EveryKernelSetMatchesDoubleOnOddRowCounts) {
  std::mt19937 rng(9);
  // From row 4 on, 41 rows: one token's four parts of two quads each (dots reading four streams),
  // then a whole quad and a partial one; 35 rows: eight quads, the partial one last in the last
  // part. At two and three tokens, two parts of five or four quads and the same ends.
  for (const auto& [rows, tokens] :
       {std::pair<int64_t, int64_t>{11, 7}, {41, 1}, {35, 1}, {41, 2}, {35, 3}}) {
    const int64_t cols = 45;
    const Int8Matrix w = Int8Matrix::Quantize(RandomMatrix(rows, cols, 1.0f, rng));
    const int64_t k = w.padded_cols();
    Matrix x(tokens, k);  // zeros past cols, as the kernels require
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t i = 0; i < cols; ++i)
        x.row(t)[i] = std::uniform_real_distribution<float>(-1, 1)(rng);
    }
    std::vector<const RowDotKernels*> sets = {&PortableRowDotKernels()};
    for (int streams : kOneTokenStreamChoices) {
      for (const RowDotKernels* set : {Avx512RowDotKernels(streams), Avx2RowDotKernels(streams)}) {
        if (set != nullptr) sets.push_back(set);
      }
    }
    for (const RowDotKernels* kernels : sets) {
      SCOPED_TRACE(KernelSetName(*kernels));
      // From row 4 on: a quad boundary that is not the matrix's first.
      std::vector<float> out(tokens * rows, 1e6f);
      kernels->dots_int8(w.quad(1), w.scales(4), rows - 4, k, x.data(), k, tokens, out.data(),
                         rows);
      for (int64_t t = 0; t < tokens; ++t) {
        for (int64_t r = 4; r < rows; ++r) {
          double want = 0, magnitude = 0;
          for (int64_t i = 0; i < cols; ++i) {
            want += static_cast<double>(w.at(r, i)) * x.row(t)[i];
            magnitude += std::abs(static_cast<double>(w.at(r, i)) * x.row(t)[i]);
          }
          EXPECT_NEAR(out[t * rows + (r - 4)], want, 1e-6 * magnitude)
              << "token " << t << " row " << r;
        }
      }
      std::vector<float> unpacked(rows * cols);
      kernels->unpack_int8(w.quad(0), w.scales(0), rows, k, cols, unpacked.data(), cols);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) EXPECT_EQ(unpacked[r * cols + c], w.at(r, c));
      }
    }
  }
}

// Rows 4 to rows − 1 of a matrix of `cols` columns against `tokens` random tokens through
// `kernels`' int16 rounding and int8 dots: exactly the int32 sums of the rounded activations (so to
// float32 rounding against double), and within the rounding's bound of the float activations.
void ExpectInt16DotsSumTheRoundedActivations(const RowDotKernels& kernels, int64_t rows,
                                             int64_t cols, int64_t tokens, std::mt19937& rng) {
  const Int8Matrix w = Int8Matrix::Quantize(RandomMatrix(rows, cols, 1.0f, rng));
  const int64_t k = w.padded_cols();
  Matrix x(tokens, k);  // zeros past cols
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < cols; ++i) {
      x.row(t)[i] = std::uniform_real_distribution<float>(-1, 1)(rng) * (t + 1);
    }
  }
  std::vector<int16_t> xq(tokens * k);
  std::vector<float> x_scales(tokens);
  bool finite = false;
  kernels.quantize_activations(x.data(), k, tokens, k, xq.data(), k, x_scales.data(), &finite);
  ASSERT_TRUE(finite);
  std::vector<float> out(tokens * rows, 1e6f);
  kernels.dots_int8_quantized(w.quad(1), w.scales(4), rows - 4, k, xq.data(), k, x_scales.data(),
                              tokens, out.data(), rows);
  for (int64_t t = 0; t < tokens; ++t) {
    double max_abs = 0;
    for (int64_t i = 0; i < cols; ++i) max_abs = std::max(max_abs, double{std::abs(x.row(t)[i])});
    EXPECT_NEAR(x_scales[t], max_abs / Int8ActivationLevels(k), 1e-6 * max_abs);
    for (int64_t r = 4; r < rows; ++r) {
      double rounded = 0, exact = 0, magnitude = 0, bound = 0;
      for (int64_t i = 0; i < cols; ++i) {
        const double wi = w.at(r, i);
        // Half a step, and the float roundings of the scale and of x ÷ scale (each ≤ 2^-24
        // relative, on values up to the levels: ≤ 2^-9 of a step together)
        EXPECT_LE(std::abs(double{x_scales[t]} * xq[t * k + i] - x.row(t)[i]),
                  (0.5 + 0x1p-9) * x_scales[t]);
        rounded += wi * x_scales[t] * xq[t * k + i];
        exact += wi * x.row(t)[i];
        magnitude += std::abs(wi * x_scales[t] * xq[t * k + i]);
        bound += std::abs(wi) * 0.5 * x_scales[t];
      }
      const float got = out[t * rows + (r - 4)];
      EXPECT_NEAR(got, rounded, 1e-6 * magnitude) << "token " << t << " row " << r;
      EXPECT_NEAR(got, exact, bound + 1e-6 * magnitude) << "token " << t << " row " << r;
    }
    for (int64_t r = rows - 4; r < rows; ++r) {  // the output row's slots past the last dot
      EXPECT_EQ(out[t * rows + r], 1e6f) << "token " << t << " wrote past the last row";
    }
  }
}

// Rows not a multiple of four, token counts that fill tiles unevenly, 3 and 4 lines of 16 columns,
// 1-4 tokens over more rows than the four-stream dots take at once.
TEST(Int8RowDotTest, Int16DotsSumTheRoundedActivationsExactly) {
  if (Int16Sets().empty()) GTEST_SKIP() << "this CPU has neither AVX512-VNNI nor AVX2";
  for (const RowDotKernels* kernels : Int16Sets()) {
    std::mt19937 rng(10);
    for (int64_t cols : {45, 64}) {
      for (int64_t tokens : {1, 2, 3, 9, 17}) {
        SCOPED_TRACE(
            absl::StrCat(KernelSetName(*kernels), ", ", cols, " columns, ", tokens, " tokens"));
        ExpectInt16DotsSumTheRoundedActivations(*kernels, 11, cols, tokens, rng);
      }
      // 1-4 tokens over 37 rows: one token (and two, in the VNNI set) reads four parts of two quads
      // each, then a whole quad and a partial one; 3-4 tokens one quad at a time. Over 31 rows:
      // eight quads, the partial one last in the last part.
      for (int64_t rows : {41, 35}) {
        for (int64_t tokens : {1, 2, 3, 4}) {
          SCOPED_TRACE(absl::StrCat(KernelSetName(*kernels), ", ", cols, " columns, ", rows,
                                    " rows, ", tokens, " tokens"));
          ExpectInt16DotsSumTheRoundedActivations(*kernels, rows, cols, tokens, rng);
        }
      }
    }
  }
}

// The largest sums the levels allow (every weight and activation at its extreme, one sign) stay
// inside int32 at a long k, where fewer levels are used.
TEST(Int8RowDotTest, Int16DotsDoNotOverflowAtTheLargestSums) {
  if (Int16Sets().empty()) GTEST_SKIP() << "this CPU has neither AVX512-VNNI nor AVX2";
  for (const RowDotKernels* kernels : Int16Sets()) {
    SCOPED_TRACE(KernelSetName(*kernels));
    const int64_t k = 20000;
    ASSERT_LT(Int8ActivationLevels(k), 16383);
    Matrix ones(4, k);
    std::fill(ones.data(), ones.data() + ones.size(), 1.0f);
    for (int64_t c = 0; c < k; ++c) ones.row(3)[c] = -1.0f;
    const Int8Matrix w = Int8Matrix::Quantize(ones);  // q = ±127, scale 1/127
    Matrix x(1, k);
    std::fill(x.data(), x.data() + x.size(), 2.5f);
    std::vector<int16_t> xq(k);
    float x_scale = 0;
    bool finite = false;
    kernels->quantize_activations(x.data(), k, 1, k, xq.data(), k, &x_scale, &finite);
    ASSERT_TRUE(finite);
    EXPECT_EQ(xq[0], Int8ActivationLevels(k));
    std::vector<float> out(4);
    kernels->dots_int8_quantized(w.quad(0), w.scales(0), 4, k, xq.data(), k, &x_scale, 1,
                                 out.data(), 4);
    for (int r = 0; r < 3; ++r) EXPECT_NEAR(out[r], 2.5 * k, 1e-5 * 2.5 * k) << "row " << r;
    EXPECT_NEAR(out[3], -2.5 * k, 1e-5 * 2.5 * k);
  }
}

// One NaN among finite values, wherever it falls (first, inside, last lane of a register), stops
// the rounding: vmaxps alone would drop it (it keeps its second operand when one is NaN).
TEST(Int8RowDotTest, Int16RoundingRefusesANanAmongFiniteValues) {
  if (Int16Sets().empty()) GTEST_SKIP() << "this CPU has neither AVX512-VNNI nor AVX2";
  const int64_t k = 48;
  for (const RowDotKernels* kernels : Int16Sets()) {
    for (int64_t at : {int64_t{0}, int64_t{5}, int64_t{7}, int64_t{15}, int64_t{16}, k - 1}) {
      SCOPED_TRACE(absl::StrCat(KernelSetName(*kernels), ", NaN at ", at));
      std::vector<float> x(k, 2.0f);
      x[at] = std::numeric_limits<float>::quiet_NaN();
      std::vector<int16_t> xq(k);
      float x_scale = 0;
      bool finite = true;
      kernels->quantize_activations(x.data(), k, 1, k, xq.data(), k, &x_scale, &finite);
      EXPECT_FALSE(finite);
    }
  }
}

}  // namespace
}  // namespace moe
