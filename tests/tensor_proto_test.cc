// moe.v1.Tensor in each encoding (values, f32_data, bf16_data) through a protobuf round trip and
// back to a matrix, and the Compute fields of weighted partial sums, as they cross the wire.
#include "common/rpc/tensor_proto.h"

#include <cmath>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/v1/expert.pb.h"

namespace moe {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// [2, 3]; every value but the last is exact in bf16 (8 significant bits).
Matrix Sample() { return Matrix(2, 3, {1.0f, -2.5f, 0.375f, 1024.0f, -0.0f, 1.0f + 1.0f / 1024}); }

template <typename Message>
Message RoundTrip(const Message& message) {
  std::string wire;
  EXPECT_TRUE(message.SerializeToString(&wire));
  Message parsed;
  EXPECT_TRUE(parsed.ParseFromString(wire));
  return parsed;
}

TEST(TensorProtoTest, EveryEncodingSurvivesTheWireAndReadsBackAsWritten) {
  const Matrix m = Sample();
  for (TensorEncoding encoding :
       {TensorEncoding::kValues, TensorEncoding::kF32, TensorEncoding::kBf16}) {
    SCOPED_TRACE(static_cast<int>(encoding));
    v1::Tensor tensor;
    WriteProtoTensor(m.view(), encoding, &tensor);
    const v1::Tensor parsed = RoundTrip(tensor);
    EXPECT_EQ(EncodingOf(parsed), encoding);
    std::vector<float> scratch;
    absl::StatusOr<ConstMatrixView> view = MatrixFromProto(parsed, 2, 3, "t", &scratch);
    ASSERT_TRUE(view.ok()) << view.status();
    for (int64_t i = 0; i < 5; ++i) EXPECT_EQ(view->data[i], m.data()[i]) << i;
    // 1 + 2^-10 rounds to nearest bf16 (ties to even): 1.
    EXPECT_EQ(view->data[5], encoding == TensorEncoding::kBf16 ? 1.0f : m.data()[5]);
    EXPECT_TRUE(std::signbit(view->data[4]));
  }
}

TEST(TensorProtoTest, EncodingNamesAreTheFlagValuesAndOthersAreRefusedNamingTheChoices) {
  EXPECT_EQ(*ParseEncodingName("values"), TensorEncoding::kValues);
  EXPECT_EQ(*ParseEncodingName("f32"), TensorEncoding::kF32);
  EXPECT_EQ(*ParseEncodingName("bf16"), TensorEncoding::kBf16);
  for (const char* name : {"", "f32_data", "F32", "fp16"}) {
    const absl::StatusOr<TensorEncoding> parsed = ParseEncodingName(name);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_THAT(parsed.status().message(), HasSubstr(std::string("--encoding=") + name));
    EXPECT_THAT(parsed.status().message(), HasSubstr("expected values, f32 or bf16"));
  }
}

TEST(TensorProtoTest, BytesAreHalfOrAllOfTheFloat32Size) {
  v1::Tensor f32, bf16;
  WriteProtoTensor(Sample().view(), TensorEncoding::kF32, &f32);
  WriteProtoTensor(Sample().view(), TensorEncoding::kBf16, &bf16);
  EXPECT_EQ(f32.f32_data().size(), 6 * sizeof(float));
  EXPECT_EQ(bf16.bf16_data().size(), 6 * sizeof(uint16_t));
  EXPECT_EQ(f32.values_size() + bf16.values_size(), 0);
}

TEST(TensorProtoTest, WritesTheListedRowsInOrder) {
  const Matrix m = Sample();
  const std::vector<int64_t> rows = {1, 0, 1};
  v1::Tensor tensor;
  WriteProtoTensorRows(m.view(), rows, TensorEncoding::kF32, &tensor);
  std::vector<float> scratch;
  absl::StatusOr<ConstMatrixView> view = MatrixFromProto(tensor, 3, 3, "t", &scratch);
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(view->row(0)[0], 1024.0f);
  EXPECT_EQ(view->row(1)[1], -2.5f);
  EXPECT_EQ(view->row(2)[0], 1024.0f);
}

TEST(TensorProtoTest, MalformedEncodingsAreInvalidArgumentNamingTheField) {
  std::vector<float> scratch;
  v1::Tensor both;
  WriteProtoTensor(Sample().view(), TensorEncoding::kF32, &both);
  both.add_values(1.0f);
  EXPECT_THAT(std::string(MatrixFromProto(both, 2, 3, "tokens", &scratch).status().message()),
              HasSubstr("more than one of values, f32_data and bf16_data"));

  v1::Tensor ragged;
  WriteProtoTensor(Sample().view(), TensorEncoding::kF32, &ragged);
  ragged.mutable_f32_data()->push_back('x');
  EXPECT_THAT(std::string(MatrixFromProto(ragged, 2, 3, "tokens", &scratch).status().message()),
              HasSubstr("tokens.f32_data has 25 bytes, not a multiple of 4"));

  v1::Tensor short_bf16;
  WriteProtoTensor(Sample().view(), TensorEncoding::kBf16, &short_bf16);
  short_bf16.set_shape(0, 3);
  EXPECT_THAT(
      std::string(MatrixFromProto(short_bf16, -1, 3, "tokens", &scratch).status().message()),
      HasSubstr("has 6 values (in bf16_data); shape [3, 3] needs 3 x 3"));

  v1::Tensor bf16;
  WriteProtoTensor(Sample().view(), TensorEncoding::kBf16, &bf16);
  EXPECT_THAT(std::string(MatrixFromProto(bf16, 2, 3, "tokens").status().message()),
              HasSubstr("bf16_data, which is not accepted here"));

  v1::Tensor nan;
  Matrix m = Sample();
  m.data()[4] = NAN;
  WriteProtoTensor(m.view(), TensorEncoding::kBf16, &nan);
  EXPECT_THAT(std::string(MatrixFromProto(nan, 2, 3, "tokens", &scratch).status().message()),
              HasSubstr("token 1, feature 1"));
}

TEST(TensorProtoTest, TheShapeAloneIsCheckedWithoutReadingTheValues) {
  v1::Tensor nan;
  Matrix m = Sample();
  m.data()[4] = NAN;
  WriteProtoTensor(m.view(), TensorEncoding::kBf16, &nan);
  // What admission needs before the values are read: the row count of a well-formed shape.
  absl::StatusOr<int64_t> rows = CheckTensorShape(nan, -1, 3, "tokens", /*bf16_accepted=*/true);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(*rows, 2);
  EXPECT_THAT(std::string(CheckTensorShape(nan, -1, 4, "tokens", true).status().message()),
              HasSubstr("d_model 3, expected 4"));
  EXPECT_THAT(std::string(CheckTensorShape(nan, -1, 3, "tokens", false).status().message()),
              HasSubstr("bf16_data, which is not accepted here"));
}

TEST(TensorProtoTest, WeightedComputeFieldsSurviveTheWire) {
  v1::ComputeRequest request;
  request.set_sum_groups(true);
  request.set_reply_encoding(v1::TENSOR_ENCODING_BF16);
  v1::ExpertGroup* group = request.add_groups();
  group->set_expert(3);
  group->add_rows(0);
  group->add_rows(1);
  group->add_weights(0.25f);
  group->add_weights(0.75f);
  const v1::ComputeRequest parsed = RoundTrip(request);
  EXPECT_TRUE(parsed.sum_groups());
  EXPECT_EQ(parsed.reply_encoding(), v1::TENSOR_ENCODING_BF16);
  EXPECT_THAT(parsed.groups(0).weights(), ElementsAre(0.25f, 0.75f));

  v1::ComputeResponse response;
  WriteProtoTensor(Sample().view(), TensorEncoding::kF32, response.mutable_sum());
  v1::Overflow* overflow = response.add_overflows();
  overflow->set_in_sum(true);
  const v1::ComputeResponse reply = RoundTrip(response);
  EXPECT_EQ(reply.sum().f32_data().size(), 6 * sizeof(float));
  EXPECT_TRUE(reply.overflows(0).in_sum());

  v1::ExpertInfo info;
  info.set_reads_tensor_bytes(true);
  EXPECT_TRUE(RoundTrip(info).reads_tensor_bytes());
}

}  // namespace
}  // namespace moe
