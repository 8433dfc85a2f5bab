#include "common/tensor/bf16_matrix.h"

#include "common/tensor/dtype.h"

namespace moe {

int64_t Bf16Matrix::PaddedCols(int64_t cols) {
  const int64_t chunks = (cols + kChunkCols - 1) / kChunkCols * kChunkCols;
  return chunks > 0 && chunks % kAliasingCols == 0 ? chunks + kChunkCols : chunks;
}

Bf16Matrix::Bf16Matrix(int64_t rows, int64_t cols)
    : rows_(rows),
      cols_(cols),
      padded_cols_(PaddedCols(cols)),
      packed_(WeightBuffer<uint16_t>(
          static_cast<size_t>((rows + kQuadRows - 1) / kQuadRows * quad_stride()))) {}

Bf16Matrix::Bf16Matrix(int64_t rows, int64_t cols, absl::Span<const uint16_t> row_major)
    : Bf16Matrix(rows, cols) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) packed_[Offset(r, c)] = row_major[r * cols + c];
  }
}

Bf16Matrix Bf16Matrix::RoundFrom(const Matrix& values) {
  Bf16Matrix out(values.rows(), values.cols());
  for (int64_t r = 0; r < out.rows_; ++r) {
    const float* row = values.row(r);
    for (int64_t c = 0; c < out.cols_; ++c) out.packed_[out.Offset(r, c)] = F32ToBf16(row[c]);
  }
  return out;
}

float Bf16Matrix::at(int64_t r, int64_t c) const { return Bf16ToF32(bits(r, c)); }

Matrix Bf16Matrix::ToF32() const {
  Matrix out(rows_, cols_);
  for (int64_t r = 0; r < rows_; ++r) {
    for (int64_t c = 0; c < cols_; ++c) out.row(r)[c] = at(r, c);
  }
  return out;
}

}  // namespace moe
