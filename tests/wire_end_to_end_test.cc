// The wire formats end to end, with the real moe_expert and moe_router binaries on loopback:
// Forward accepts tokens in every Tensor encoding (the old `values` form included) and answers
// in kind; routers with and without per-token partial sums match the independent reference; a
// shard answers weighted sums in the encoding asked for; bf16 on the router-shard wire stays
// within the error the README states.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/rpc/tensor_proto.h"
#include "common/tensor/dtype.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/v1/expert.grpc.pb.h"
#include "moe/v1/router.grpc.pb.h"
#include "testing/cluster.h"
#include "testing/reference_layer.h"
#include "testing/test_models.h"

namespace moe {
namespace {

using testing::Cluster;
using testing::MakeRequest;

constexpr int64_t kD = 256;  // the tiny preset's d_model

class WireEndToEndTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = new std::string(testing::WriteTestModel("tiny"));
    auto reference = testing::ReferenceLayer::Load(*model_, 0);
    ASSERT_TRUE(reference.ok()) << reference.status();
    reference_ = new testing::ReferenceLayer(std::move(*reference));
  }

  // Largest RowRelativeError of `output` ([n, kD]) against the reference for `tokens`.
  static double MaxError(const v1::Tensor& output, const std::vector<float>& tokens, int64_t n) {
    std::vector<float> scratch;
    absl::StatusOr<ConstMatrixView> view = MatrixFromProto(output, n, kD, "output", &scratch);
    EXPECT_TRUE(view.ok()) << view.status();
    if (!view.ok()) return INFINITY;
    const testing::ReferenceOutput expected = reference_->Forward(tokens, n);
    double worst = 0;
    for (int64_t t = 0; t < n; ++t) {
      if (expected.margin[t] < 1e-5) continue;  // a near-tie fp32 may route either way
      worst = std::max(worst, testing::RowRelativeError(view->data, expected.output, t, kD));
    }
    return worst;
  }

  static std::string* model_;
  static testing::ReferenceLayer* reference_;
};

std::string* WireEndToEndTest::model_ = nullptr;
testing::ReferenceLayer* WireEndToEndTest::reference_ = nullptr;

TEST_F(WireEndToEndTest, RoutersWithAndWithoutPartialSumsMatchTheReference) {
  // Partial sums add each token's expert outputs on the shards, then the shards' sums here: a
  // different fp32 summation order than one sum over all k experts, within the same bound.
  for (const char* partial_sums : {"--partial_sums=true", "--partial_sums=false"}) {
    SCOPED_TRACE(partial_sums);
    Cluster cluster(*model_, 0, {"0-3", "4-7"}, {partial_sums});
    for (int64_t n : {1, 7, 256}) {
      const std::vector<float> tokens = testing::RandomTokens(n, kD, 300 + n);
      v1::ForwardResponse response;
      grpc::Status status = cluster.Forward(MakeRequest(tokens, n, kD), &response);
      ASSERT_TRUE(status.ok()) << status.error_message();
      EXPECT_LE(MaxError(response.output(), tokens, n), 1e-4) << n << " tokens";
    }
  }
}

TEST_F(WireEndToEndTest, ForwardTakesEveryEncodingAndAnswersInKind) {
  Cluster cluster(*model_, 0, {"0-3", "4-7"});
  const int64_t n = 9;
  const std::vector<float> tokens = testing::RandomTokens(n, kD, 7);
  // What a bf16 request carries, as float32: the reference's input for that case.
  std::vector<float> rounded(tokens);
  for (float& v : rounded) v = Bf16ToF32(F32ToBf16(v));
  for (TensorEncoding encoding :
       {TensorEncoding::kValues, TensorEncoding::kF32, TensorEncoding::kBf16}) {
    SCOPED_TRACE(static_cast<int>(encoding));
    v1::ForwardRequest request = MakeRequest(tokens, n, kD);
    WriteProtoTensor(ConstMatrixView{tokens.data(), n, kD}, encoding, request.mutable_tokens());
    v1::ForwardResponse response;
    grpc::Status status = cluster.Forward(request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(EncodingOf(response.output()),
              encoding == TensorEncoding::kValues ? TensorEncoding::kValues : TensorEncoding::kF32);
    EXPECT_LE(MaxError(response.output(), encoding == TensorEncoding::kBf16 ? rounded : tokens, n),
              1e-4);
  }
}

TEST_F(WireEndToEndTest, ShardAnswersWeightedSumsInTheEncodingAskedFor) {
  Cluster cluster(*model_, 0, {"0-3", "4-7"});
  auto stub = v1::Expert::NewStub(
      grpc::CreateChannel(cluster.expert(0).target(), grpc::InsecureChannelCredentials()));
  const int64_t n = 3;
  const std::vector<float> tokens = testing::RandomTokens(n, kD, 11);
  // Expert 0 computes rows 0-2, expert 2 rows 1-2: the per-group outputs, the old way.
  v1::ComputeRequest request;
  WriteProtoTensor(ConstMatrixView{tokens.data(), n, kD}, TensorEncoding::kValues,
                   request.mutable_tokens());
  const std::vector<std::vector<int>> rows = {{0, 1, 2}, {1, 2}};
  const std::vector<std::vector<float>> weights = {{0.5f, 0.25f, 1.0f}, {0.75f, -2.0f}};
  for (int e : {0, 2}) {
    v1::ExpertGroup* group = request.add_groups();
    group->set_expert(e);
    const std::vector<int>& r = rows[e / 2];
    group->mutable_rows()->Add(r.begin(), r.end());
  }
  v1::ComputeResponse outputs;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(stub->Compute(&context, request, &outputs).ok());
  }
  ASSERT_EQ(outputs.outputs_size(), 2);
  // The weighted sums in double, and the sums of the terms' magnitudes: an fp32 sum of terms
  // that cancel is within float32 rounding of the terms, not of the (smaller) result.
  std::vector<double> expected(n * kD, 0.0), magnitude(n * kD, 0.0);
  for (int g = 0; g < 2; ++g) {
    for (size_t i = 0; i < rows[g].size(); ++i) {
      for (int64_t c = 0; c < kD; ++c) {
        const double term =
            double{weights[g][i]} * outputs.outputs(g).values(static_cast<int>(i * kD + c));
        expected[rows[g][i] * kD + c] += term;
        magnitude[rows[g][i] * kD + c] += std::abs(term);
      }
    }
  }
  // The same work as a weighted call, tokens as bytes, the sum in each byte encoding.
  WriteProtoTensor(ConstMatrixView{tokens.data(), n, kD}, TensorEncoding::kF32,
                   request.mutable_tokens());
  request.set_sum_groups(true);
  for (int g = 0; g < 2; ++g) {
    request.mutable_groups(g)->mutable_weights()->Add(weights[g].begin(), weights[g].end());
  }
  for (v1::TensorEncoding encoding : {v1::TENSOR_ENCODING_F32, v1::TENSOR_ENCODING_BF16}) {
    SCOPED_TRACE(encoding);
    request.set_reply_encoding(encoding);
    v1::ComputeResponse summed;
    grpc::ClientContext context;
    grpc::Status status = stub->Compute(&context, request, &summed);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(summed.outputs_size(), 0);
    std::vector<float> scratch;
    absl::StatusOr<ConstMatrixView> sum = MatrixFromProto(summed.sum(), n, kD, "sum", &scratch);
    ASSERT_TRUE(sum.ok()) << sum.status();
    EXPECT_EQ(EncodingOf(summed.sum()),
              encoding == v1::TENSOR_ENCODING_F32 ? TensorEncoding::kF32 : TensorEncoding::kBf16);
    // bf16 keeps 8 significant bits: each value within 2^-8 of itself (ties, rounding).
    const double tolerance = encoding == v1::TENSOR_ENCODING_F32 ? 1e-6 : 1.0 / 256;
    for (int64_t i = 0; i < n * kD; ++i) {
      ASSERT_NEAR(sum->data[i], expected[i], tolerance * (magnitude[i] + 1e-6)) << i;
    }
  }
  // Weights that do not match the rows are refused before anything computes.
  request.mutable_groups(1)->mutable_weights()->RemoveLast();
  v1::ComputeResponse refused;
  grpc::ClientContext context;
  grpc::Status status = stub->Compute(&context, request, &refused);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), ::testing::HasSubstr("groups[1] has 1 weights for 2 rows"));
}

TEST_F(WireEndToEndTest, Bf16ShardWireStaysWithinTheDocumentedError) {
  // README "Wire format": bf16 rounds the tokens to the shards and their partial sums back, each
  // to 8 significant bits; measured on this model the output's row error stays below 1e-2.
  Cluster cluster(*model_, 0, {"0-3", "4-7"}, {"--shard_wire_dtype=bf16"});
  const int64_t n = 64;
  const std::vector<float> tokens = testing::RandomTokens(n, kD, 5);
  v1::ForwardResponse response;
  grpc::Status status = cluster.Forward(MakeRequest(tokens, n, kD), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const double error = MaxError(response.output(), tokens, n);
  EXPECT_LE(error, 1e-2);
  EXPECT_GT(error, 1e-4) << "bf16 on the wire should round (is the flag in effect?)";
  std::printf("bf16 shard wire: max row relative error %.3g over %lld tokens\n", error,
              static_cast<long long>(n));
}

}  // namespace
}  // namespace moe
