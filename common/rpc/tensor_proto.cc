#include "common/rpc/tensor_proto.h"

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace moe {

absl::StatusOr<ConstMatrixView> MatrixFromProto(const v1::Tensor& tensor, int64_t expected_rows,
                                                int64_t expected_cols, absl::string_view what) {
  const std::string expected = expected_rows >= 0
                                   ? absl::StrCat("[", expected_rows, ", ", expected_cols, "]")
                                   : absl::StrCat("[num_tokens, ", expected_cols, "]");
  const std::string shape = absl::StrCat("[", absl::StrJoin(tensor.shape(), ", "), "]");
  if (tensor.shape_size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ".shape is ", shape, ": rank ", tensor.shape_size(), ", expected rank 2 ", expected));
  }
  const int64_t rows = tensor.shape(0);
  const int64_t cols = tensor.shape(1);
  if (cols != expected_cols) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ".shape is ", shape, ": d_model ", cols, ", expected ", expected_cols));
  }
  if (expected_rows >= 0 ? rows != expected_rows : rows < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ".shape is ", shape, ": ", rows, " rows, expected ", expected));
  }
  // Compare rows first: rows * cols could overflow for a hostile shape, values_size() cannot.
  if (rows > tensor.values_size() || rows * cols != tensor.values_size()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has ", tensor.values_size(),
                                                   " values; shape ", shape, " needs ", rows, " x ",
                                                   cols));
  }
  const float* values = tensor.values().data();
  for (int64_t i = 0; i < rows * cols; ++i) {
    if (!std::isfinite(values[i])) {
      return absl::InvalidArgumentError(absl::StrCat(what, " value ", i, " (token ", i / cols,
                                                     ", feature ", i % cols, ") is ", values[i],
                                                     "; every value must be finite"));
    }
  }
  return ConstMatrixView{values, rows, cols};
}

MatrixView ResizeProtoTensor(v1::Tensor* tensor, int64_t rows, int64_t cols) {
  tensor->clear_shape();
  tensor->add_shape(rows);
  tensor->add_shape(cols);
  tensor->mutable_values()->Resize(static_cast<int>(rows * cols), 0.0f);
  return {tensor->mutable_values()->mutable_data(), rows, cols};
}

}  // namespace moe
