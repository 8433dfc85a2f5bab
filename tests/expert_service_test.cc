// The expert shard's gRPC service (ExpertServiceImpl), called in-process: what it refuses, the
// weighted sums it answers in waves, and the overflows it reports instead of a malformed reply.
#include "expert_service/expert_service.h"

#include <algorithm>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/rpc/tensor_proto.h"
#include "expert_service/expert_shard.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_models.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

class ExpertServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { model_ = new std::string(testing::WriteTestModel("tiny")); }
  static std::string* model_;
};
std::string* ExpertServiceTest::model_ = nullptr;

TEST_F(ExpertServiceTest, RejectsGroupsItCannotServe) {
  auto shard = ExpertShard::Create({*model_, "0", "0-3"});
  ASSERT_TRUE(shard.ok());
  ExpertServiceImpl service(shard->get(), BatchingOptions());
  v1::ComputeRequest request;
  MatrixView tokens = ResizeProtoTensor(request.mutable_tokens(), 2, 256);
  std::fill(tokens.data, tokens.data + tokens.size(), 0.5f);
  v1::ExpertGroup* group = request.add_groups();
  group->set_expert(5);
  group->add_rows(0);
  v1::ComputeResponse response;
  grpc::Status status = service.Compute(nullptr, &request, &response);
  // The caller's map is stale, not its request: a code the router retries on another replica.
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("expert 5 is not held by this shard"));

  group->set_expert(1);
  group->set_rows(0, 2);
  response.Clear();
  status = service.Compute(nullptr, &request, &response);
  EXPECT_THAT(status.error_message(), HasSubstr("outside [0, 2)"));

  group->set_rows(0, 1);
  response.Clear();
  ASSERT_TRUE(service.Compute(nullptr, &request, &response).ok());
  ASSERT_EQ(response.outputs_size(), 1);
  EXPECT_THAT(response.outputs(0).shape(), ::testing::ElementsAre(1, 256));
}

// 4 groups of 600 rows hold more staged rows than one wave of groups may (the call's token count,
// at least 1 024), so the service computes them in waves: the sum is the same, in every reply
// encoding (float32 values, f32 bytes summed in place in the reply, bfloat16).
TEST_F(ExpertServiceTest, SumsAManyGroupCallWaveByWave) {
  auto shard = ExpertShard::Create({*model_, "0", "all"});
  ASSERT_TRUE(shard.ok());
  ExpertServiceImpl service(shard->get(), BatchingOptions());
  constexpr int kTokens = 600, kD = 256, kGroups = 4;
  const std::vector<float> x = testing::RandomTokens(kTokens, kD, 8);
  v1::ComputeRequest request;
  MatrixView tokens = ResizeProtoTensor(request.mutable_tokens(), kTokens, kD);
  std::copy(x.begin(), x.end(), tokens.data);
  request.set_sum_groups(true);
  for (int e = 0; e < kGroups; ++e) {
    v1::ExpertGroup* group = request.add_groups();
    group->set_expert(e);
    for (int t = 0; t < kTokens; ++t) {
      group->add_rows(t);
      group->add_weights(0.1f * (e + 1));
    }
  }
  std::vector<double> want(kTokens * kD, 0.0);
  for (int e = 0; e < kGroups; ++e) {
    Matrix y(kTokens, kD);
    ASSERT_TRUE((*shard)->Compute(0, e, ConstMatrixView{x.data(), kTokens, kD}, y.view()).ok());
    for (int i = 0; i < kTokens * kD; ++i) want[i] += 0.1f * (e + 1) * y.data()[i];
  }
  for (const v1::TensorEncoding encoding :
       {v1::TENSOR_ENCODING_VALUES, v1::TENSOR_ENCODING_F32, v1::TENSOR_ENCODING_BF16}) {
    SCOPED_TRACE(v1::TensorEncoding_Name(encoding));
    request.set_reply_encoding(encoding);
    v1::ComputeResponse response;
    const grpc::Status status = service.Compute(nullptr, &request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    std::vector<float> widened;
    auto sum = MatrixFromProto(response.sum(), kTokens, kD, "sum", &widened);
    ASSERT_TRUE(sum.ok()) << sum.status();
    const double relative = encoding == v1::TENSOR_ENCODING_BF16 ? 1.0 / 256 : 0.0;
    for (int t = 0; t < kTokens; ++t) {
      for (int i = 0; i < kD; ++i) {
        const double w = want[t * kD + i];
        ASSERT_NEAR(sum->row(t)[i], w, 1e-5 + relative * std::abs(w))
            << "token " << t << " feature " << i;
      }
    }
  }
}

// The largest magnitude in expert 0's output for token `token` of `x` ([tokens, 256]).
float LargestOutput(const ExpertShard& shard, const std::vector<float>& x, int tokens, int token) {
  constexpr int kD = 256;
  Matrix y(tokens, kD);
  EXPECT_TRUE(shard.Compute(0, 0, ConstMatrixView{x.data(), tokens, kD}, y.view()).ok());
  float largest = 0;
  for (int i = 0; i < kD; ++i) largest = std::max(largest, std::abs(y.row(token)[i]));
  return largest;
}

// A weighted sum that overflows float32 though every group's output is finite: the reply is the
// overflow report alone, whichever encoding the sum would have gone in.
TEST_F(ExpertServiceTest, ReportsASumThatOverflowsInsteadOfSendingIt) {
  auto shard = ExpertShard::Create({*model_, "0", "all"});
  ASSERT_TRUE(shard.ok());
  ExpertServiceImpl service(shard->get(), BatchingOptions());
  constexpr int kTokens = 3, kD = 256;
  std::vector<float> x = testing::RandomTokens(kTokens, kD, 9);
  for (int i = 0; i < kD; ++i) x[2 * kD + i] *= 50;  // token 2 large, its outputs still finite
  const float largest = LargestOutput(**shard, x, kTokens, 2);
  ASSERT_TRUE(std::isfinite(largest));
  ASSERT_GT(largest, 1.0f);  // so float32's largest value as its weight overflows the sum
  v1::ComputeRequest request;
  MatrixView tokens = ResizeProtoTensor(request.mutable_tokens(), kTokens, kD);
  std::copy(x.begin(), x.end(), tokens.data);
  request.set_sum_groups(true);
  v1::ExpertGroup* group = request.add_groups();
  group->set_expert(0);
  for (int t = 0; t < kTokens; ++t) {
    group->add_rows(t);
    group->add_weights(t == 2 ? std::numeric_limits<float>::max() : 0.5f);
  }
  for (const v1::TensorEncoding encoding :
       {v1::TENSOR_ENCODING_VALUES, v1::TENSOR_ENCODING_F32, v1::TENSOR_ENCODING_BF16}) {
    SCOPED_TRACE(v1::TensorEncoding_Name(encoding));
    request.set_reply_encoding(encoding);
    v1::ComputeResponse response;
    ASSERT_TRUE(service.Compute(nullptr, &request, &response).ok());
    EXPECT_FALSE(response.has_sum());
    ASSERT_EQ(response.overflows_size(), 1);
    EXPECT_EQ(response.overflows(0).row(), 2);
    EXPECT_TRUE(response.overflows(0).in_sum());
  }
}

// A sum that float32 holds but bf16 rounds to infinity is reported in a bf16 reply, not sent as
// an infinity that the router would take for a malformed reply; float32 replies carry it.
TEST_F(ExpertServiceTest, ReportsASumTooLargeForABf16Reply) {
  auto shard = ExpertShard::Create({*model_, "0", "all"});
  ASSERT_TRUE(shard.ok());
  ExpertServiceImpl service(shard->get(), BatchingOptions());
  constexpr int kTokens = 2, kD = 256;
  std::vector<float> x = testing::RandomTokens(kTokens, kD, 9);
  for (int i = 0; i < kD; ++i) x[kD + i] *= 50;
  const float largest = LargestOutput(**shard, x, kTokens, 1);
  ASSERT_GT(largest, 1.0f);                      // so its weight below is a finite float32
  constexpr float kTooLargeForBf16 = 3.399e38f;  // bf16's largest finite value is 3.3895e38
  v1::ComputeRequest request;
  MatrixView tokens = ResizeProtoTensor(request.mutable_tokens(), kTokens, kD);
  std::copy(x.begin(), x.end(), tokens.data);
  request.set_sum_groups(true);
  v1::ExpertGroup* group = request.add_groups();
  group->set_expert(0);
  group->add_rows(0);
  group->add_weights(0.5f);
  group->add_rows(1);
  group->add_weights(kTooLargeForBf16 / largest);
  for (const v1::TensorEncoding encoding :
       {v1::TENSOR_ENCODING_VALUES, v1::TENSOR_ENCODING_F32, v1::TENSOR_ENCODING_BF16}) {
    SCOPED_TRACE(v1::TensorEncoding_Name(encoding));
    request.set_reply_encoding(encoding);
    v1::ComputeResponse response;
    ASSERT_TRUE(service.Compute(nullptr, &request, &response).ok());
    if (encoding == v1::TENSOR_ENCODING_BF16) {
      EXPECT_FALSE(response.has_sum());
      ASSERT_EQ(response.overflows_size(), 1);
      EXPECT_EQ(response.overflows(0).row(), 1);
      EXPECT_TRUE(response.overflows(0).in_sum());
      continue;
    }
    EXPECT_EQ(response.overflows_size(), 0);
    std::vector<float> scratch;
    auto sum = MatrixFromProto(response.sum(), kTokens, kD, "sum", &scratch);
    ASSERT_TRUE(sum.ok()) << sum.status();
    float sum_largest = 0;
    for (int i = 0; i < kD; ++i) sum_largest = std::max(sum_largest, std::abs(sum->row(1)[i]));
    EXPECT_NEAR(sum_largest, kTooLargeForBf16, 1e33f);
  }
}

// `tokens` tokens of width 256 where token `huge` is 1e30 everywhere (finite, but every expert's
// output for it overflows float32), and groups of (expert, rows, weight per row).
v1::ComputeRequest RequestWithAHugeToken(
    int tokens, int huge, const std::vector<std::pair<int, std::vector<int>>>& groups,
    bool sum_groups) {
  v1::ComputeRequest request;
  std::vector<float> x = testing::RandomTokens(tokens, 256, 11);
  std::fill(x.begin() + huge * 256, x.begin() + (huge + 1) * 256, 1e30f);
  MatrixView view = ResizeProtoTensor(request.mutable_tokens(), tokens, 256);
  std::copy(x.begin(), x.end(), view.data);
  request.set_sum_groups(sum_groups);
  for (const auto& [expert, rows] : groups) {
    v1::ExpertGroup* group = request.add_groups();
    group->set_expert(expert);
    for (int r : rows) {
      group->add_rows(r);
      group->add_weights(0.5f);
    }
  }
  return request;
}

// A group whose output overflows is reported by its expert and the first row that did, not the
// first group's, whether the shard sums the groups or answers each, in every reply encoding.
TEST_F(ExpertServiceTest, ReportsTheGroupWhoseOutputOverflows) {
  auto shard = ExpertShard::Create({*model_, "0", "all"});
  ASSERT_TRUE(shard.ok());
  ExpertServiceImpl service(shard->get(), BatchingOptions());
  for (bool sum_groups : {true, false}) {
    v1::ComputeRequest request =
        RequestWithAHugeToken(3, /*huge=*/2, {{0, {0, 1}}, {3, {1, 2}}}, sum_groups);
    for (const v1::TensorEncoding encoding :
         {v1::TENSOR_ENCODING_VALUES, v1::TENSOR_ENCODING_F32, v1::TENSOR_ENCODING_BF16}) {
      SCOPED_TRACE(
          absl::StrCat(sum_groups ? "summed, " : "per group, ", v1::TensorEncoding_Name(encoding)));
      request.set_reply_encoding(encoding);
      v1::ComputeResponse response;
      ASSERT_TRUE(service.Compute(nullptr, &request, &response).ok());
      EXPECT_FALSE(response.has_sum());
      EXPECT_EQ(response.outputs_size(), 0);
      ASSERT_EQ(response.overflows_size(), 1);
      EXPECT_EQ(response.overflows(0).row(), 2);
      EXPECT_EQ(response.overflows(0).expert(), 3);
      EXPECT_FALSE(response.overflows(0).in_sum());
    }
  }
}

// A summed call too large for one wave of staged outputs (1 024 rows): the sum overflows in the
// first wave (a finite output times float32's largest weight), a group of the second wave
// overflows itself; the group is reported, as when every group is checked on its own.
TEST_F(ExpertServiceTest, ReportsAnOverflowingGroupOfALaterWaveBeforeTheSum) {
  auto shard = ExpertShard::Create({*model_, "0", "all"});
  ASSERT_TRUE(shard.ok());
  ExpertServiceImpl service(shard->get(), BatchingOptions());
  constexpr int kTokens = 600, kHuge = 5;
  std::vector<int> all(kTokens), all_but_huge;
  for (int t = 0; t < kTokens; ++t) {
    all[t] = t;
    if (t != kHuge) all_but_huge.push_back(t);
  }
  v1::ComputeRequest request =
      RequestWithAHugeToken(kTokens, kHuge, {{1, all_but_huge}, {6, all}}, /*sum_groups=*/true);
  // Token 0 (scaled up, so its outputs pass 1 in magnitude) weighted by float32's largest value
  // in the first wave: the sum overflows there.
  for (int i = 0; i < 256; ++i)
    request.mutable_tokens()->set_values(i, request.tokens().values(i) * 1000);
  request.mutable_groups(0)->set_weights(0, std::numeric_limits<float>::max());
  v1::ComputeResponse response;
  ASSERT_TRUE(service.Compute(nullptr, &request, &response).ok());
  ASSERT_EQ(response.overflows_size(), 1);
  EXPECT_EQ(response.overflows(0).row(), kHuge);
  EXPECT_EQ(response.overflows(0).expert(), 6);
  EXPECT_FALSE(response.overflows(0).in_sum());
  // Without the overflowing group, the sum's own overflow is what is reported.
  request.mutable_groups()->RemoveLast();
  response.Clear();
  ASSERT_TRUE(service.Compute(nullptr, &request, &response).ok());
  ASSERT_EQ(response.overflows_size(), 1);
  EXPECT_EQ(response.overflows(0).row(), 0);
  EXPECT_TRUE(response.overflows(0).in_sum());
}

TEST_F(ExpertServiceTest, RefusesALayerItDoesNotHold) {
  auto shard = ExpertShard::Create({*model_, "0", "0-3"});
  ASSERT_TRUE(shard.ok());
  ExpertServiceImpl service(shard->get(), BatchingOptions());
  v1::ComputeRequest request;
  request.set_layer(1);
  ResizeProtoTensor(request.mutable_tokens(), 1, 256);
  v1::ComputeResponse response;
  grpc::Status status = service.Compute(nullptr, &request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(),
              HasSubstr("layer 1 is not held by this shard (it holds layers 0)"));
}

}  // namespace
}  // namespace moe
