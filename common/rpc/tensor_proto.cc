#include "common/rpc/tensor_proto.h"

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status/status_macros.h"
#include "common/tensor/dtype.h"
#include "common/tensor/finite.h"

namespace moe {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "Tensor.f32_data and bf16_data are little-endian; this host is not");

int EncodingsSet(const v1::Tensor& tensor) {
  return (tensor.values_size() > 0) + !tensor.f32_data().empty() + !tensor.bf16_data().empty();
}

int64_t ValueCount(const v1::Tensor& tensor) {
  switch (EncodingOf(tensor)) {
    case TensorEncoding::kValues:
      return tensor.values_size();
    case TensorEncoding::kF32:
      return static_cast<int64_t>(tensor.f32_data().size() / sizeof(float));
    case TensorEncoding::kBf16:
      return static_cast<int64_t>(tensor.bf16_data().size() / sizeof(uint16_t));
  }
  return 0;
}

// The float32 values of a checked tensor: in place when they are float32 and aligned, else
// converted into `scratch`.
const float* Float32Values(const v1::Tensor& tensor, int64_t count, std::vector<float>* scratch) {
  switch (EncodingOf(tensor)) {
    case TensorEncoding::kValues:
      return tensor.values().data();
    case TensorEncoding::kF32: {
      const char* bytes = tensor.f32_data().data();
      // Protobuf's strings are heap allocations (aligned for any type) once longer than a few
      // bytes; a short one may sit inside the string object, so copy when it is not aligned.
      if (reinterpret_cast<uintptr_t>(bytes) % alignof(float) == 0) {
        return reinterpret_cast<const float*>(bytes);
      }
      scratch->resize(count);
      std::memcpy(scratch->data(), bytes, count * sizeof(float));
      return scratch->data();
    }
    case TensorEncoding::kBf16: {
      const char* bytes = tensor.bf16_data().data();
      scratch->resize(count);
      for (int64_t i = 0; i < count; ++i) {
        uint16_t bits;
        std::memcpy(&bits, bytes + i * sizeof(bits), sizeof(bits));
        (*scratch)[i] = Bf16ToF32(bits);
      }
      return scratch->data();
    }
  }
  return nullptr;
}

void RoundRowToBf16(const float* row, int64_t cols, char* out) {
  for (int64_t i = 0; i < cols; ++i) {
    const uint16_t bits = F32ToBf16(row[i]);
    std::memcpy(out + i * sizeof(bits), &bits, sizeof(bits));
  }
}

}  // namespace

absl::string_view FieldName(TensorEncoding encoding) {
  switch (encoding) {
    case TensorEncoding::kValues:
      return "values";
    case TensorEncoding::kF32:
      return "f32_data";
    case TensorEncoding::kBf16:
      return "bf16_data";
  }
  return "";
}

absl::StatusOr<TensorEncoding> ParseEncodingName(absl::string_view name) {
  if (name == "values") return TensorEncoding::kValues;
  if (name == "f32") return TensorEncoding::kF32;
  if (name == "bf16") return TensorEncoding::kBf16;
  return absl::InvalidArgumentError(
      absl::StrCat("--encoding=", name, ": expected values, f32 or bf16"));
}

TensorEncoding EncodingOf(const v1::Tensor& tensor) {
  if (!tensor.f32_data().empty()) return TensorEncoding::kF32;
  if (!tensor.bf16_data().empty()) return TensorEncoding::kBf16;
  return TensorEncoding::kValues;
}

absl::StatusOr<int64_t> CheckTensorShape(const v1::Tensor& tensor, int64_t expected_rows,
                                         int64_t expected_cols, absl::string_view what,
                                         bool bf16_accepted) {
  const std::string expected = expected_rows >= 0
                                   ? absl::StrCat("[", expected_rows, ", ", expected_cols, "]")
                                   : absl::StrCat("[num_tokens, ", expected_cols, "]");
  const std::string shape = absl::StrCat("[", absl::StrJoin(tensor.shape(), ", "), "]");
  if (EncodingsSet(tensor) > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " sets more than one of values, f32_data and bf16_data; expected exactly one"));
  }
  const TensorEncoding encoding = EncodingOf(tensor);
  if (encoding == TensorEncoding::kBf16 && !bf16_accepted) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is bf16_data, which is not accepted here; send values or f32_data"));
  }
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
  const absl::string_view field = FieldName(encoding);
  const size_t value_bytes = encoding == TensorEncoding::kBf16 ? 2 : 4;
  const size_t data_bytes = encoding == TensorEncoding::kF32    ? tensor.f32_data().size()
                            : encoding == TensorEncoding::kBf16 ? tensor.bf16_data().size()
                                                                : 0;
  if (data_bytes % value_bytes != 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ".", field, " has ", data_bytes,
                                                   " bytes, not a multiple of ", value_bytes));
  }
  const int64_t count = ValueCount(tensor);
  // Compare rows first: rows * cols could overflow for a hostile shape, count cannot.
  if (rows > count || rows * cols != count) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has ", count, " values (in ", field,
                                                   "); shape ", shape, " needs ", rows, " x ",
                                                   cols));
  }
  return rows;
}

absl::StatusOr<ConstMatrixView> MatrixFromProto(const v1::Tensor& tensor, int64_t expected_rows,
                                                int64_t expected_cols, absl::string_view what,
                                                std::vector<float>* scratch) {
  ASSIGN_OR_RETURN(const int64_t rows, CheckTensorShape(tensor, expected_rows, expected_cols, what,
                                                        /*bf16_accepted=*/scratch != nullptr));
  const int64_t cols = expected_cols;
  const int64_t count = rows * cols;
  std::vector<float> unused;
  const float* values = Float32Values(tensor, count, scratch != nullptr ? scratch : &unused);
  if (!unused.empty()) {
    // Only a few bytes of f32_data can be unaligned, and only the caller's scratch outlives us.
    return absl::InvalidArgumentError(absl::StrCat(what, ".f32_data is not 4-byte aligned"));
  }
  if (const int64_t i = FirstNonFinite(absl::MakeConstSpan(values, rows * cols)); i >= 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, " value ", i, " (token ", i / cols,
                                                   ", feature ", i % cols, ") is ", values[i],
                                                   "; every value must be finite"));
  }
  return ConstMatrixView{values, rows, cols};
}

MatrixView ResizeProtoTensor(v1::Tensor* tensor, int64_t rows, int64_t cols,
                             TensorEncoding encoding) {
  tensor->Clear();
  tensor->add_shape(rows);
  tensor->add_shape(cols);
  if (encoding == TensorEncoding::kF32) {
    std::string* data = tensor->mutable_f32_data();
    data->assign(static_cast<size_t>(rows * cols) * sizeof(float), '\0');
    return {reinterpret_cast<float*>(data->data()), rows, cols};
  }
  tensor->mutable_values()->Resize(static_cast<int>(rows * cols), 0.0f);
  return {tensor->mutable_values()->mutable_data(), rows, cols};
}

void WriteProtoTensorRows(ConstMatrixView m, absl::Span<const int64_t> rows,
                          TensorEncoding encoding, v1::Tensor* tensor) {
  const int64_t n = static_cast<int64_t>(rows.size());
  if (encoding == TensorEncoding::kBf16) {
    tensor->Clear();
    tensor->add_shape(n);
    tensor->add_shape(m.cols);
    std::string* data = tensor->mutable_bf16_data();
    data->resize(static_cast<size_t>(n * m.cols) * sizeof(uint16_t));
    for (int64_t i = 0; i < n; ++i) {
      RoundRowToBf16(m.row(rows[i]), m.cols, data->data() + i * m.cols * sizeof(uint16_t));
    }
    return;
  }
  MatrixView out = ResizeProtoTensor(tensor, n, m.cols, encoding);
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(out.row(i), m.row(rows[i]), m.cols * sizeof(float));
  }
}

void WriteProtoTensor(ConstMatrixView m, TensorEncoding encoding, v1::Tensor* tensor) {
  std::vector<int64_t> rows(m.rows);
  for (int64_t r = 0; r < m.rows; ++r) rows[r] = r;
  WriteProtoTensorRows(m, rows, encoding, tensor);
}

}  // namespace moe
