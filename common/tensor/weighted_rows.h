// The one accumulation step of per-token weighted sums (shards answering a weighted Compute, the
// router's fallback for shards that do not): sum.row(rows[i]) += weights[i] · y.row(i), in fp32,
// for i in order. Callers add groups in their order, which fixes the summation order.
#ifndef MOE_COMMON_TENSOR_WEIGHTED_ROWS_H_
#define MOE_COMMON_TENSOR_WEIGHTED_ROWS_H_

#include <cstdint>

#include "absl/types/span.h"
#include "common/tensor/matrix.h"

namespace moe {

// `rows` and `weights` have y.rows entries; every rows[i] is < sum.rows; y.cols == sum.cols.
template <typename Index>
void AddWeightedRows(ConstMatrixView y, absl::Span<const Index> rows,
                     absl::Span<const float> weights, MatrixView sum) {
  for (int64_t i = 0; i < y.rows; ++i) {
    const float w = weights[i];
    const float* from = y.row(i);
    float* to = sum.row(rows[i]);
    for (int64_t c = 0; c < y.cols; ++c) to[c] += w * from[c];
  }
}

}  // namespace moe

#endif  // MOE_COMMON_TENSOR_WEIGHTED_ROWS_H_
