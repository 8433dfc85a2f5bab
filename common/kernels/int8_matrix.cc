#include "common/kernels/int8_matrix.h"

#include <algorithm>
#include <cmath>

namespace moe {

Int8Matrix::Int8Matrix(int64_t rows, int64_t cols)
    : rows_(rows),
      cols_(cols),
      padded_cols_((cols + kChunkCols - 1) / kChunkCols * kChunkCols),
      packed_(WeightBuffer<int8_t>(
          static_cast<size_t>((rows + kQuadRows - 1) / kQuadRows * quad_stride()))),
      scales_(static_cast<size_t>((rows + kQuadRows - 1) / kQuadRows * kQuadRows), 0.0f) {}

Int8Matrix Int8Matrix::Quantize(const Matrix& values) {
  Int8Matrix out(values.rows(), values.cols());
  for (int64_t r = 0; r < out.rows_; ++r) {
    const float* row = values.row(r);
    float max_abs = 0.0f;
    for (int64_t c = 0; c < out.cols_; ++c) max_abs = std::max(max_abs, std::abs(row[c]));
    if (max_abs == 0.0f) continue;  // q = 0, scale = 0
    const float scale = max_abs / 127.0f;
    out.scales_[r] = scale;
    for (int64_t c = 0; c < out.cols_; ++c) {
      // Dividing by the float scale can land a hair past ±127 for the largest value: clamp.
      const float q = std::clamp(std::round(row[c] / scale), -127.0f, 127.0f);
      out.packed_[out.Offset(r, c)] = static_cast<int8_t>(q);
    }
  }
  return out;
}

Matrix Int8Matrix::ToF32() const {
  Matrix out(rows_, cols_);
  for (int64_t r = 0; r < rows_; ++r) {
    for (int64_t c = 0; c < cols_; ++c) out.row(r)[c] = at(r, c);
  }
  return out;
}

}  // namespace moe
