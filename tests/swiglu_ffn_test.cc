#include "common/swiglu_ffn.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "common/blas_kernels.h"
#include "common/matrix.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

Matrix RandomMatrix(int64_t rows, int64_t cols, float scale, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  Matrix m(rows, cols);
  for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = scale * dist(rng);
  return m;
}

SwigluWeights RandomWeights(int64_t d_model, int64_t width, std::mt19937& rng) {
  SwigluWeights w;
  w.gate = RandomMatrix(width, d_model, 1.0f / std::sqrt(static_cast<float>(d_model)), rng);
  w.up = RandomMatrix(width, d_model, 1.0f / std::sqrt(static_cast<float>(d_model)), rng);
  w.down = RandomMatrix(d_model, width, 1.0f / std::sqrt(static_cast<float>(width)), rng);
  return w;
}

// y = down( silu(gate·x) ⊙ (up·x) ) with plain loops in double.
std::vector<double> ReferenceSwiglu(const SwigluWeights& w, const Matrix& x) {
  const int64_t d = w.gate.cols(), h = w.gate.rows();
  std::vector<double> y(x.rows() * d, 0.0);
  std::vector<double> hidden(h);
  for (int64_t t = 0; t < x.rows(); ++t) {
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

class SwigluForwardTest : public ::testing::TestWithParam<int> {};

TEST_P(SwigluForwardTest, MatchesTripleLoopReferenceInDouble) {
  constexpr int64_t kDModel = 96, kWidth = 160;
  const int tokens = GetParam();
  std::mt19937 rng(1000 + tokens);
  const SwigluWeights w = RandomWeights(kDModel, kWidth, rng);
  ASSERT_EQ(w.d_model(), kDModel);
  ASSERT_EQ(w.width(), kWidth);
  const Matrix x = RandomMatrix(tokens, kDModel, 1.0f, rng);
  Matrix y(tokens, kDModel);
  for (int64_t i = 0; i < y.size(); ++i) y.data()[i] = 1e6f;  // must be overwritten

  ASSERT_TRUE(SwigluForward(w, x, y.view()).ok());

  const std::vector<double> want = ReferenceSwiglu(w, x);
  double norm2 = 0;
  for (double v : want) norm2 += v * v;
  const double norm = std::sqrt(norm2);
  ASSERT_GT(norm, 0.0);
  double max_err = 0;
  for (int64_t i = 0; i < y.size(); ++i) {
    max_err = std::max(max_err, std::abs(static_cast<double>(y.data()[i]) - want[i]));
  }
  EXPECT_LE(max_err, 1e-5 * norm) << "tokens " << tokens << " output norm " << norm;
}

INSTANTIATE_TEST_SUITE_P(TokenCounts, SwigluForwardTest, ::testing::Values(1, 3, 64, 257));

TEST(SwigluFfnTest, EachTokenIsComputedIndependentlyOfTheBatch) {
  std::mt19937 rng(3);
  const SwigluWeights w = RandomWeights(16, 24, rng);
  const Matrix x = RandomMatrix(5, 16, 1.0f, rng);
  Matrix batch(5, 16);
  ASSERT_TRUE(SwigluForward(w, x, batch.view()).ok());
  const std::vector<double> want = ReferenceSwiglu(w, x);
  for (int64_t t = 0; t < 5; ++t) {
    Matrix one(1, 16, std::vector<float>(x.row(t), x.row(t) + 16));
    Matrix y(1, 16);
    ASSERT_TRUE(SwigluForward(w, one, y.view()).ok());
    for (int i = 0; i < 16; ++i) {
      EXPECT_NEAR(y.row(0)[i], want[t * 16 + i], 1e-5) << t << "," << i;
      EXPECT_NEAR(batch.row(t)[i], want[t * 16 + i], 1e-5) << t << "," << i;
    }
  }
}

TEST(SwigluFfnTest, InputWidthOtherThanDModelIsInvalidArgument) {
  std::mt19937 rng(4);
  const SwigluWeights w = RandomWeights(96, 160, rng);
  const Matrix x(2, 95);
  Matrix y(2, 96);
  EXPECT_EQ(SwigluForward(w, x, y.view()).code(), absl::StatusCode::kInvalidArgument);
}

TEST(SwigluFfnTest, OutputShapeOtherThanInputShapeIsInvalidArgument) {
  std::mt19937 rng(5);
  const SwigluWeights w = RandomWeights(96, 160, rng);
  const Matrix x(2, 96);
  Matrix fewer_rows(1, 96);
  EXPECT_EQ(SwigluForward(w, x, fewer_rows.view()).code(), absl::StatusCode::kInvalidArgument);
  Matrix wrong_cols(2, 160);
  EXPECT_EQ(SwigluForward(w, x, wrong_cols.view()).code(), absl::StatusCode::kInvalidArgument);
}

TEST(SwigluFfnTest, InconsistentWeightShapesAreInvalidArgument) {
  std::mt19937 rng(6);
  SwigluWeights w = RandomWeights(96, 160, rng);
  w.up = RandomMatrix(159, 96, 0.1f, rng);
  const Matrix x(2, 96);
  Matrix y(2, 96);
  EXPECT_EQ(SwigluForward(w, x, y.view()).code(), absl::StatusCode::kInvalidArgument);

  SwigluWeights w2 = RandomWeights(96, 160, rng);
  w2.down = RandomMatrix(160, 96, 0.1f, rng);  // transposed by mistake
  EXPECT_EQ(SwigluForward(w2, x, y.view()).code(), absl::StatusCode::kInvalidArgument);
}

// c[m][n] = sum_k a[m][k] * b[n][k], in double.
std::vector<double> ReferenceMatMulTransposed(const Matrix& a, const Matrix& b) {
  std::vector<double> c(a.rows() * b.rows(), 0.0);
  for (int64_t m = 0; m < a.rows(); ++m) {
    for (int64_t n = 0; n < b.rows(); ++n) {
      double acc = 0;
      for (int64_t k = 0; k < a.cols(); ++k) {
        acc += static_cast<double>(a.row(m)[k]) * b.row(n)[k];
      }
      c[m * b.rows() + n] = acc;
    }
  }
  return c;
}

TEST(BlasKernelsTest, MatMulTransposedMatchesLoopReference) {
  std::mt19937 rng(11);
  const Matrix a = RandomMatrix(7, 33, 1.0f, rng);
  const Matrix b = RandomMatrix(5, 33, 1.0f, rng);
  Matrix c(7, 5);
  for (int64_t i = 0; i < c.size(); ++i) c.data()[i] = 123.0f;  // overwritten, not added to
  ASSERT_TRUE(MatMulTransposed(a, b, c.view()).ok());
  const std::vector<double> want = ReferenceMatMulTransposed(a, b);
  for (int64_t i = 0; i < c.size(); ++i) EXPECT_NEAR(c.data()[i], want[i], 1e-5) << i;
}

TEST(BlasKernelsTest, MatMulTransposedAccumulateAddsToExistingOutput) {
  std::mt19937 rng(12);
  const Matrix a = RandomMatrix(4, 9, 1.0f, rng);
  const Matrix b = RandomMatrix(6, 9, 1.0f, rng);
  const Matrix start = RandomMatrix(4, 6, 10.0f, rng);
  Matrix c = start;
  ASSERT_TRUE(MatMulTransposed(a, b, c.view(), /*accumulate=*/true).ok());
  const std::vector<double> product = ReferenceMatMulTransposed(a, b);
  for (int64_t i = 0; i < c.size(); ++i) {
    EXPECT_NEAR(c.data()[i], start.data()[i] + product[i], 1e-5) << i;
  }
}

TEST(BlasKernelsTest, MatMulTransposedWithEmptyInnerDimensionGivesZerosOrKeepsOutput) {
  const Matrix a(3, 0);
  const Matrix b(2, 0);
  Matrix c(3, 2, std::vector<float>(6, 5.0f));
  ASSERT_TRUE(MatMulTransposed(a, b, c.view(), /*accumulate=*/true).ok());
  for (float v : c.values()) EXPECT_EQ(v, 5.0f);
  ASSERT_TRUE(MatMulTransposed(a, b, c.view()).ok());
  for (float v : c.values()) EXPECT_EQ(v, 0.0f);
}

TEST(BlasKernelsTest, MatMulTransposedShapeMismatchIsInvalidArgument) {
  const Matrix a(4, 9);
  const Matrix b(6, 8);  // inner dimension differs
  Matrix c(4, 6);
  EXPECT_EQ(MatMulTransposed(a, b, c.view()).code(), absl::StatusCode::kInvalidArgument);

  const Matrix b_ok(6, 9);
  Matrix c_wrong_rows(3, 6);
  EXPECT_EQ(MatMulTransposed(a, b_ok, c_wrong_rows.view()).code(),
            absl::StatusCode::kInvalidArgument);
  Matrix c_wrong_cols(4, 9);
  EXPECT_EQ(MatMulTransposed(a, b_ok, c_wrong_cols.view()).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moe
