// Checked views of moe.v1.Tensor messages as matrices, in any of their encodings (router.proto):
// `values` (packed repeated float) and `f32_data` are viewed in place, without a copy;
// `bf16_data` is widened (exactly) into a buffer the caller provides. Writers fill a tensor in a
// chosen encoding; only bf16 rounds (to nearest, ties to even). Assumes a little-endian host.
#ifndef MOE_COMMON_RPC_TENSOR_PROTO_H_
#define MOE_COMMON_RPC_TENSOR_PROTO_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/tensor/matrix.h"
#include "moe/v1/router.pb.h"

namespace moe {

enum class TensorEncoding {
  kValues,  // Tensor.values
  kF32,     // Tensor.f32_data
  kBf16,    // Tensor.bf16_data
};

// Views `tensor` as [rows, cols] after checking: exactly one encoding holds values (an empty
// tensor counts as `values`), rank 2, cols == expected_cols, rows >= 1 (or rows == expected_rows
// when expected_rows >= 0), as many values as the shape says, every value finite.
// InvalidArgument naming `what`, the problem and the expected value. A bf16 tensor is widened
// into `*scratch`, which the view then points into; without `scratch` it is InvalidArgument.
absl::StatusOr<ConstMatrixView> MatrixFromProto(const v1::Tensor& tensor, int64_t expected_rows,
                                                int64_t expected_cols, absl::string_view what,
                                                std::vector<float>* scratch = nullptr);

// The checks of MatrixFromProto short of reading the values (encoding, rank, shape, value
// count), for a caller that needs the row count first; returns it. `bf16_accepted` false: a bf16
// tensor is InvalidArgument.
absl::StatusOr<int64_t> CheckTensorShape(const v1::Tensor& tensor, int64_t expected_rows,
                                         int64_t expected_cols, absl::string_view what,
                                         bool bf16_accepted);

// The Tensor field an encoding fills: "values", "f32_data" or "bf16_data".
absl::string_view FieldName(TensorEncoding encoding);

// The encoding a flag names: "values", "f32" or "bf16" (the values of moe_client's and
// moe_layer_bench's --encoding). InvalidArgument naming `name` and the choices otherwise.
absl::StatusOr<TensorEncoding> ParseEncodingName(absl::string_view name);

// The encoding `tensor` uses (kValues when it holds no values at all).
TensorEncoding EncodingOf(const v1::Tensor& tensor);

// Sets `tensor` to shape [rows, cols] with zeroed values in `encoding` (kValues or kF32; kBf16
// cannot be written in place, see WriteProtoTensor) and returns a view to fill them.
MatrixView ResizeProtoTensor(v1::Tensor* tensor, int64_t rows, int64_t cols,
                             TensorEncoding encoding = TensorEncoding::kValues);

// Sets `tensor` to the listed rows of `m`, in that order: shape [rows.size(), m.cols], in
// `encoding`. Each row is copied (or rounded) once, straight into the message.
void WriteProtoTensorRows(ConstMatrixView m, absl::Span<const int64_t> rows,
                          TensorEncoding encoding, v1::Tensor* tensor);

// Sets `tensor` to all of `m` in `encoding`.
void WriteProtoTensor(ConstMatrixView m, TensorEncoding encoding, v1::Tensor* tensor);

}  // namespace moe

#endif  // MOE_COMMON_RPC_TENSOR_PROTO_H_
