// The OpenBLAS wrappers: results against loops in double, and shape checks before BLAS is called.
#include "common/kernels/blas_kernels.h"

#include <algorithm>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "common/tensor/matrix.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

Matrix RandomMatrix(int64_t rows, int64_t cols, float scale, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  Matrix m(rows, cols);
  for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = scale * dist(rng);
  return m;
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

// Few rows of a take the row-dot kernels, more take sgemm (blas_kernels.h): both sides of the
// switch, an inner dimension no vector width divides, and row strides longer than the rows.
TEST(BlasKernelsTest, MatMulTransposedMatchesLoopReferenceOnBothSidesOfTheKernelSwitch) {
  std::mt19937 rng(13);
  const int64_t k = 2051, n = 37;
  const Matrix b_wide = RandomMatrix(n, k + 5, 1.0f, rng);
  const ConstMatrixView b{b_wide.data(), n, k, k + 5};
  Matrix b_dense(n, k);
  for (int64_t r = 0; r < n; ++r) std::copy(b.row(r), b.row(r) + k, b_dense.row(r));
  for (int64_t m : {1, 2, 3, 15, 16, 17, 40}) {
    const Matrix a_wide = RandomMatrix(m, k + 3, 1.0f, rng);
    const ConstMatrixView a{a_wide.data(), m, k, k + 3};
    Matrix a_dense(m, k);
    for (int64_t r = 0; r < m; ++r) std::copy(a.row(r), a.row(r) + k, a_dense.row(r));
    Matrix c_wide(m, n + 2, std::vector<float>(m * (n + 2), 123.0f));
    ASSERT_TRUE(MatMulTransposed(a, b, MatrixView{c_wide.data(), m, n, n + 2}).ok()) << m;
    const std::vector<double> want = ReferenceMatMulTransposed(a_dense, b_dense);
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t j = 0; j < n; ++j) {
        // float32 sums of k products of magnitude <= 1: a few ulps of sqrt(k) per product.
        EXPECT_NEAR(c_wide.row(r)[j], want[r * n + j], 2e-4) << "m " << m << " row " << r;
      }
      EXPECT_EQ(c_wide.row(r)[n], 123.0f) << "past the row: m " << m;
      EXPECT_EQ(c_wide.row(r)[n + 1], 123.0f) << "past the row: m " << m;
    }
  }
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

TEST(BlasKernelsTest, MatMulTransposedReadsAndWritesThroughRowStrides) {
  std::mt19937 rng(13);
  const Matrix a = RandomMatrix(4, 9, 1.0f, rng), b = RandomMatrix(3, 9, 1.0f, rng);
  std::vector<float> as(4 * 12, 1e9f), bs(3 * 10, 1e9f), cs(4 * 5, -1.0f);
  for (int64_t r = 0; r < 4; ++r) std::copy(a.row(r), a.row(r) + 9, &as[r * 12]);
  for (int64_t r = 0; r < 3; ++r) std::copy(b.row(r), b.row(r) + 9, &bs[r * 10]);
  ASSERT_TRUE(MatMulTransposed(ConstMatrixView(as.data(), 4, 9, 12),
                               ConstMatrixView(bs.data(), 3, 9, 10), MatrixView(cs.data(), 4, 3, 5))
                  .ok());
  const std::vector<double> want = ReferenceMatMulTransposed(a, b);
  for (int64_t m = 0; m < 4; ++m) {
    for (int64_t n = 0; n < 3; ++n) EXPECT_NEAR(cs[m * 5 + n], want[m * 3 + n], 1e-4) << m << n;
    EXPECT_EQ(cs[m * 5 + 3], -1.0f);  // padding untouched
    EXPECT_EQ(cs[m * 5 + 4], -1.0f);
  }
}

TEST(BlasKernelsTest, StrideShorterThanARowIsInvalidArgument) {
  std::vector<float> a(8), b(8), c(4);
  EXPECT_EQ(MatMulTransposed(ConstMatrixView(a.data(), 2, 4, 3), ConstMatrixView(b.data(), 2, 4),
                             MatrixView(c.data(), 2, 2))
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moe
