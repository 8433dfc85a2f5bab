// Dense row-major float32 matrices: Matrix owns its storage (rows packed, stride = cols; the first
// row on a cache line, on the heap or, for weights, in the weight arena: aligned_vector.h);
// MatrixView / ConstMatrixView borrow someone else's, rows `stride` floats apart (stride ≥ cols),
// so a view can cover rows laid out with padding, e.g. the layout a kernel reads (see
// SwigluInputStride). The values between cols and stride belong to the owner of the memory: a
// view never reads or writes them. Views never outlive what they point into; none of these types
// synchronise.
#ifndef MOE_COMMON_TENSOR_MATRIX_H_
#define MOE_COMMON_TENSOR_MATRIX_H_

#include <cstdint>
#include <vector>

#include "common/tensor/aligned_vector.h"

namespace moe {

struct ConstMatrixView {
  ConstMatrixView() = default;
  // Packed rows (stride = cols).
  ConstMatrixView(const float* data, int64_t rows, int64_t cols)
      : data(data), rows(rows), cols(cols), stride(cols) {}
  // Rows `stride` floats apart; stride ≥ cols.
  ConstMatrixView(const float* data, int64_t rows, int64_t cols, int64_t stride)
      : data(data), rows(rows), cols(cols), stride(stride) {}

  const float* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t stride = 0;

  const float* row(int64_t r) const { return data + r * stride; }
  int64_t size() const { return rows * cols; }  // values in view, not counting the padding
};

struct MatrixView {
  MatrixView() = default;
  MatrixView(float* data, int64_t rows, int64_t cols)
      : data(data), rows(rows), cols(cols), stride(cols) {}
  MatrixView(float* data, int64_t rows, int64_t cols, int64_t stride)
      : data(data), rows(rows), cols(cols), stride(stride) {}

  float* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t stride = 0;

  float* row(int64_t r) const { return data + r * stride; }
  int64_t size() const { return rows * cols; }
  operator ConstMatrixView() const { return {data, rows, cols, stride}; }
};

class Matrix {
 public:
  Matrix() = default;
  Matrix(int64_t rows, int64_t cols) : rows_(rows), cols_(cols), values_(rows * cols, 0.0f) {}
  // Copies `values` (rows × cols, row-major) into aligned storage.
  Matrix(int64_t rows, int64_t cols, const std::vector<float>& values)
      : rows_(rows), cols_(cols), values_(values.begin(), values.end()) {}

  // A copy whose values live in the weight arena (WeightBuffer), for weights kept as float32.
  Matrix CopyToWeightPages() const {
    Matrix copy;
    copy.rows_ = rows_;
    copy.cols_ = cols_;
    copy.values_ = AlignedVector<float>(values_.begin(), values_.end(),
                                        AlignedAllocator<float>(BufferKind::kWeights));
    return copy;
  }

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t size() const { return rows_ * cols_; }
  float* data() { return values_.data(); }
  const float* data() const { return values_.data(); }
  float* row(int64_t r) { return values_.data() + r * cols_; }
  const float* row(int64_t r) const { return values_.data() + r * cols_; }
  const AlignedVector<float>& values() const { return values_; }

  MatrixView view() { return {values_.data(), rows_, cols_}; }
  ConstMatrixView view() const { return {values_.data(), rows_, cols_}; }
  operator ConstMatrixView() const { return view(); }

 private:
  int64_t rows_ = 0;
  int64_t cols_ = 0;
  AlignedVector<float> values_;
};

}  // namespace moe

#endif  // MOE_COMMON_TENSOR_MATRIX_H_
