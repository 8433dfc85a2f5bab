// Bf16Matrix (common/tensor/bf16_matrix.h): the packed layout keeps every value exactly, pads
// columns to chunks of 16 (one chunk more where a quad would be a multiple of 4 KB), and holds
// zeros in every padded place the kernels read.
#include "common/tensor/bf16_matrix.h"

#include <cstdint>
#include <vector>

#include "common/tensor/dtype.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

TEST(Bf16MatrixTest, PadsColumnsToChunksAndBreaksFourKilobyteQuads) {
  EXPECT_EQ(Bf16Matrix::PaddedCols(0), 0);
  EXPECT_EQ(Bf16Matrix::PaddedCols(1), 16);
  EXPECT_EQ(Bf16Matrix::PaddedCols(100), 112);
  EXPECT_EQ(Bf16Matrix::PaddedCols(768), 768);    // Qwen3's width: 6 KB quads
  EXPECT_EQ(Bf16Matrix::PaddedCols(500), 528);    // rounds to 512 columns: a 4 KB quad
  EXPECT_EQ(Bf16Matrix::PaddedCols(1024), 1040);  // OLMoE's width
  EXPECT_EQ(Bf16Matrix::PaddedCols(2048), 2064);  // both shapes' d_model
}

TEST(Bf16MatrixTest, KeepsEveryValueAndZeroesThePadding) {
  const int64_t rows = 7, cols = 512;
  std::vector<uint16_t> bits(rows * cols);
  for (size_t i = 0; i < bits.size(); ++i) bits[i] = F32ToBf16(0.5f + static_cast<float>(i));
  const Bf16Matrix m(rows, cols, bits);
  ASSERT_EQ(m.padded_cols(), 528);
  EXPECT_EQ(m.quad_stride(), 4 * 528);
  EXPECT_EQ(m.bytes(), 2 * m.quad_stride() * static_cast<int64_t>(sizeof(uint16_t)));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(m.bits(r, c), bits[r * cols + c]) << r << "," << c;
  }
  // Padding: columns [512, 528) of every row and the eighth row of the second quad.
  for (int64_t r = 0; r < 8; ++r) {
    for (int64_t c = r < rows ? cols : 0; c < m.padded_cols(); ++c) {
      ASSERT_EQ(m.bits(r, c), 0) << r << "," << c;
    }
  }
  const Matrix wide = m.ToF32();
  EXPECT_EQ(wide.row(6)[511], Bf16ToF32(bits[6 * cols + 511]));
}

}  // namespace
}  // namespace moe
