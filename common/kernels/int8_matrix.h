// A matrix of int8 weights with one float32 scale per row (symmetric, per output channel): the
// value of element (r, c) is scale(r) · q(r, c), with q in [−127, 127]. A quarter of the bytes of
// float32, half of bf16: the few-token FFN, bound by memory bandwidth, streams that much less.
//
// Quantisation (Quantize): scale(r) = max_c |w(r, c)| / 127 and q(r, c) = round(w(r, c) / scale(r))
// (ties away from zero), so |w − scale·q| ≤ scale / 2 for every element: at most 1/254 of the
// row's largest magnitude. A row of zeros gets scale 0.
//
// Layout ("quads", as Bf16Matrix): rows are taken four at a time, each quad one contiguous run of
// memory; inside a quad, columns go in chunks of 16, and a chunk is one 64-byte line holding 16
// values of row 0, then of rows 1, 2 and 3. One line feeds four rows × 16 columns of a dot. Rows
// and columns are zero-padded to multiples of 4 and 16 (padding rows have scale 0).
//
// Owns its storage; no synchronisation (read-only sharing is fine).
#ifndef MOE_COMMON_KERNELS_INT8_MATRIX_H_
#define MOE_COMMON_KERNELS_INT8_MATRIX_H_

#include <cstdint>
#include <vector>

#include "common/tensor/aligned_vector.h"
#include "common/tensor/matrix.h"

namespace moe {

class Int8Matrix {
 public:
  static constexpr int64_t kQuadRows = 4;
  static constexpr int64_t kChunkCols = 16;

  Int8Matrix() = default;
  // Quantises `values` row by row (see the top of this file). Values must be finite.
  static Int8Matrix Quantize(const Matrix& values);

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int8_t q(int64_t r, int64_t c) const { return packed_[Offset(r, c)]; }
  float scale(int64_t r) const { return scales_[r]; }
  // The dequantised value scale(r) · q(r, c), and all of them row-major.
  float at(int64_t r, int64_t c) const { return scale(r) * static_cast<float>(q(r, c)); }
  Matrix ToF32() const;

  // For the kernels: columns padded to a multiple of 16, the start of quad g (rows 4g..4g+3),
  // quad_stride() values after quad g − 1, and the scales of rows from r on.
  int64_t padded_cols() const { return padded_cols_; }
  int64_t quad_stride() const { return kQuadRows * padded_cols_; }
  const int8_t* quad(int64_t g) const { return packed_.data() + g * quad_stride(); }
  const float* scales(int64_t r) const { return scales_.data() + r; }
  // Bytes of storage (values with padding, and the scales), what a kernel streams.
  int64_t bytes() const {
    return static_cast<int64_t>(packed_.size() + scales_.size() * sizeof(float));
  }

 private:
  Int8Matrix(int64_t rows, int64_t cols);
  int64_t Offset(int64_t r, int64_t c) const {
    return (r / kQuadRows) * quad_stride() + (c / kChunkCols) * (kQuadRows * kChunkCols) +
           (r % kQuadRows) * kChunkCols + c % kChunkCols;
  }

  int64_t rows_ = 0;
  int64_t cols_ = 0;
  int64_t padded_cols_ = 0;
  AlignedVector<int8_t> packed_;  // in the weight arena (WeightBuffer)
  std::vector<float> scales_;     // one per row, padding rows included
};

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_INT8_MATRIX_H_
