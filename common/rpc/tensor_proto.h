// Checked views of moe.v1.Tensor messages as matrices, without copying the values.
#ifndef MOE_COMMON_RPC_TENSOR_PROTO_H_
#define MOE_COMMON_RPC_TENSOR_PROTO_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/tensor/matrix.h"
#include "moe/v1/router.pb.h"

namespace moe {

// Views `tensor` as [rows, cols] after checking: rank 2, cols == expected_cols, rows >= 1 (or
// rows == expected_rows when expected_rows >= 0), values.size() == rows * cols, every value
// finite. InvalidArgument naming `what`, the problem and the expected value.
absl::StatusOr<ConstMatrixView> MatrixFromProto(const v1::Tensor& tensor, int64_t expected_rows,
                                                int64_t expected_cols, absl::string_view what);

// Sets `tensor` to shape [rows, cols] with zeroed values and returns a view to fill them.
MatrixView ResizeProtoTensor(v1::Tensor* tensor, int64_t rows, int64_t cols);

}  // namespace moe

#endif  // MOE_COMMON_RPC_TENSOR_PROTO_H_
