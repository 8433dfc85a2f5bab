// The expert shard core and its gRPC service, in-process.
#include "expert_service/expert_shard.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <limits>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/checkpoint/layer_loader.h"
#include "common/kernels/cpu_affinity.h"
#include "common/rpc/tensor_proto.h"
#include "expert_service/expert_service.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/reference_layer.h"
#include "testing/test_models.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

class ExpertShardTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { model_ = new std::string(testing::WriteTestModel("tiny")); }
  static std::string* model_;
};
std::string* ExpertShardTest::model_ = nullptr;

TEST_F(ExpertShardTest, LoadsOnlyTheNamedExperts) {
  auto shard = ExpertShard::Create({*model_, "0", "2,5"});
  ASSERT_TRUE(shard.ok()) << shard.status();
  EXPECT_GE((*shard)->FfnId(0, 2), 0);
  EXPECT_GE((*shard)->FfnId(0, 5), 0);
  EXPECT_EQ((*shard)->FfnId(0, 3), -1);
  EXPECT_EQ((*shard)->FfnId(1, 2), -1);
  EXPECT_EQ((*shard)->weight_bytes(), 2 * 3 * 256 * 512 * 4);
}

TEST_F(ExpertShardTest, ComputesTheExpertFfnOfTheCheckpoint) {
  auto shard = ExpertShard::Create({*model_, "0", "all"});
  ASSERT_TRUE(shard.ok());
  const std::vector<float> x = testing::RandomTokens(3, 256, 4);
  Matrix y(3, 256);
  ASSERT_TRUE((*shard)->Compute(0, 6, ConstMatrixView{x.data(), 3, 256}, y.view()).ok());
  // Expert 6 by hand from the stored tensors, in double.
  auto loader = LayerLoader::Open(*model_, 0);
  ASSERT_TRUE(loader.ok());
  auto expert = (*loader)->LoadExpert(6);
  ASSERT_TRUE(expert.ok());
  const SwigluWeights::F32* w = expert->f32();
  ASSERT_NE(w, nullptr);
  for (int t = 0; t < 3; ++t) {
    std::vector<double> act(512);
    for (int j = 0; j < 512; ++j) {
      double g = 0, u = 0;
      for (int i = 0; i < 256; ++i) {
        g += double(w->gate.row(j)[i]) * x[t * 256 + i];
        u += double(w->up.row(j)[i]) * x[t * 256 + i];
      }
      act[j] = g / (1 + std::exp(-g)) * u;
    }
    for (int i = 0; i < 256; ++i) {
      double expected = 0;
      for (int j = 0; j < 512; ++j) expected += double(w->down.row(i)[j]) * act[j];
      EXPECT_NEAR(y.row(t)[i], expected, 1e-5) << "token " << t << " feature " << i;
    }
  }
}

TEST_F(ExpertShardTest, ComputesOnItsOwnKernelPoolOfTheConfiguredSize) {
  ExpertShardOptions options{*model_, "0", "all"};
  options.kernel_threads = 3;
  auto shard = ExpertShard::Create(options);
  ASSERT_TRUE(shard.ok()) << shard.status();
  EXPECT_EQ((*shard)->kernel_threads(), 3);
  EXPECT_TRUE((*shard)->kernel_cpus().empty());
  options.kernel_threads = 0;  // one per CPU this process may use
  auto every_core = ExpertShard::Create(options);
  ASSERT_TRUE(every_core.ok());
  const std::vector<int> allowed = AllowedCpus();
  EXPECT_EQ((*every_core)->kernel_threads(), static_cast<int>(allowed.size()));
  EXPECT_TRUE((*every_core)->kernel_cpus().empty()) << "pinned without being asked to";
  options.pin_kernel_threads = true;
  auto pinned = ExpertShard::Create(options);
  ASSERT_TRUE(pinned.ok());
  EXPECT_EQ((*pinned)->kernel_threads(), static_cast<int>(allowed.size()));
  EXPECT_EQ((*pinned)->kernel_cpus(), allowed.size() >= 2 ? allowed : std::vector<int>{});
  options.kernel_threads = 3;  // not one per CPU: left to the scheduler
  auto three = ExpertShard::Create(options);
  ASSERT_TRUE(three.ok());
  EXPECT_EQ((*three)->kernel_cpus().empty(), allowed.size() != 3);
}

TEST_F(ExpertShardTest, RunsCallsAcrossTheKernelThreadsOnlyWhereThatPays) {
  ExpertShardOptions options{*model_, "0", "all"};
  options.kernel_threads = 2;
  auto created = ExpertShard::Create(options);
  ASSERT_TRUE(created.ok()) << created.status();
  const ExpertShard& shard = **created;
  const std::vector<float> x = testing::RandomTokens(200, 256, 7);
  std::vector<int> ffns;
  for (int e = 0; e < 8; ++e) ffns.push_back(shard.FfnId(0, e));
  // Each call i computes expert i over the first tokens[i] tokens, beside the same FFN computed
  // alone on every kernel thread.
  auto check = [&](const std::vector<int64_t>& tokens) -> bool {
    std::vector<Matrix> y(tokens.size());
    std::vector<std::atomic<int>> runs(tokens.size());
    const bool across = shard.RunAcrossThreads(
        absl::MakeConstSpan(ffns.data(), tokens.size()), tokens, [&](size_t i) {
          runs[i].fetch_add(1);
          y[i] = Matrix(tokens[i], 256);
          EXPECT_TRUE(
              shard.Compute(ffns[i], ConstMatrixView{x.data(), tokens[i], 256}, y[i].view()).ok());
        });
    for (size_t i = 0; i < tokens.size(); ++i) {
      EXPECT_EQ(runs[i].load(), across ? 1 : 0) << "call " << i;
      if (!across) continue;
      Matrix alone(tokens[i], 256);
      EXPECT_TRUE(
          shard.Compute(ffns[i], ConstMatrixView{x.data(), tokens[i], 256}, alone.view()).ok());
      int64_t differ = 0;
      for (int64_t j = 0; j < alone.size(); ++j) {
        differ += std::abs(y[i].data()[j] - alone.data()[j]) > 1e-5f;
      }
      EXPECT_EQ(differ, 0) << "call " << i;
    }
    return across;
  };
  EXPECT_TRUE(check({3, 3, 3, 3, 3, 3, 3, 3}));
  EXPECT_TRUE(check({8, 1, 2, 5, 3, 4, 7, 6}));     // largest first, the split is even
  EXPECT_FALSE(check({3, 3, 3, 3, 3, 3, 3}));       // fewer than four calls per thread
  EXPECT_FALSE(check({200, 1, 1, 1, 1, 1, 1, 1}));  // one thread would do well above half
  // While calls run across the threads, the threads are taken: a call inside runs on its own.
  std::atomic<int> nested_across{0};
  const std::vector<int64_t> eight(8, 2);
  ASSERT_TRUE(shard.RunAcrossThreads(ffns, eight, [&](size_t) {
    if (shard.RunAcrossThreads(ffns, eight, [](size_t) {})) {
      nested_across.fetch_add(1);
    }
  }));
  EXPECT_EQ(nested_across.load(), 0);

  EXPECT_FALSE(shard.RunAcrossThreads(std::vector<int>(8, 99), eight, [](size_t) {}));  // not held

  options.kernel_threads = 1;
  auto one_thread = ExpertShard::Create(options);
  ASSERT_TRUE(one_thread.ok());
  EXPECT_FALSE((*one_thread)->RunAcrossThreads(ffns, eight, [](size_t) {}));
  // A call that would run on OpenBLAS, which has threads of its own, keeps them all.
  const int64_t blas_from = SwigluBlasMinTokens(WeightStorage::kF32);
  if (blas_from != kSwigluNeverBlas) {
    EXPECT_FALSE(shard.RunAcrossThreads(ffns, std::vector<int64_t>(8, blas_from), [](size_t) {}));
  }
}

TEST_F(ExpertShardTest, RejectsExpertsTheLayerDoesNotHave) {
  auto shard = ExpertShard::Create({*model_, "0", "6-9"});
  EXPECT_EQ(shard.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(shard.status().message()), HasSubstr("expert 9 is out of range [0, 8)"));
}

TEST_F(ExpertShardTest, RejectsSharedForAFamilyWithoutSharedExpert) {
  auto shard = ExpertShard::Create({*model_, "0", "0,shared"});
  EXPECT_THAT(std::string(shard.status().message()), HasSubstr("no shared expert"));
}

TEST_F(ExpertShardTest, MissingShardFileIsAnErrorNamingIt) {
  SyntheticModelOptions options;
  options.num_shards = 3;
  const std::string dir = testing::WriteTestModel("tiny", options);
  std::filesystem::remove(dir + "/model-00003-of-00003.safetensors");
  auto shard = ExpertShard::Create({dir, "0", "all"});
  EXPECT_FALSE(shard.ok());
  EXPECT_THAT(std::string(shard.status().message()), HasSubstr("model-00003-of-00003"));
}

TEST_F(ExpertShardTest, ServiceRejectsGroupsItCannotServe) {
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
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
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
TEST_F(ExpertShardTest, ServiceSumsAManyGroupCallWaveByWave) {
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

// A weighted sum that overflows float32 though every group's output is finite: the reply is the
// overflow report alone, whichever encoding the sum would have gone in.
TEST_F(ExpertShardTest, ServiceReportsASumThatOverflowsInsteadOfSendingIt) {
  auto shard = ExpertShard::Create({*model_, "0", "all"});
  ASSERT_TRUE(shard.ok());
  ExpertServiceImpl service(shard->get(), BatchingOptions());
  constexpr int kTokens = 3, kD = 256;
  std::vector<float> x = testing::RandomTokens(kTokens, kD, 9);
  for (int i = 0; i < kD; ++i) x[2 * kD + i] *= 50;  // token 2 large, its outputs still finite
  Matrix y(kTokens, kD);
  ASSERT_TRUE((*shard)->Compute(0, 0, ConstMatrixView{x.data(), kTokens, kD}, y.view()).ok());
  float largest = 0;
  for (int i = 0; i < kD; ++i) largest = std::max(largest, std::abs(y.row(2)[i]));
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
TEST_F(ExpertShardTest, ServiceReportsTheGroupWhoseOutputOverflows) {
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
TEST_F(ExpertShardTest, ServiceReportsAnOverflowingGroupOfALaterWaveBeforeTheSum) {
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

TEST_F(ExpertShardTest, ServiceRefusesALayerItDoesNotHold) {
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

TEST(MultiLayerShardTest, HoldsItsExpertsOfEveryMoeLayerAndNothingElse) {
  // deepseek-v3-tiny: layer 0 is dense (first_k_dense_replace), the others are MoE.
  const std::string model = testing::WriteTestModel("deepseek-v3-tiny");
  auto one = ExpertShard::Create({model, "all", "0-1"});
  ASSERT_TRUE(one.ok()) << one.status();
  const std::vector<int>& layers = (*one)->layers();
  ASSERT_GE(layers.size(), 1u);
  EXPECT_NE(layers.front(), 0) << "the dense layer 0 was loaded";
  for (int layer : layers) {
    EXPECT_GE((*one)->FfnId(layer, 0), 0);
    EXPECT_GE((*one)->FfnId(layer, 1), 0);
    EXPECT_EQ((*one)->FfnId(layer, 2), -1);
  }
  auto single = ExpertShard::Create({model, std::to_string(layers.back()), "0-1"});
  ASSERT_TRUE(single.ok());
  EXPECT_EQ((*one)->weight_bytes(),
            static_cast<int64_t>(layers.size()) * (*single)->weight_bytes());
  auto dense = ExpertShard::Create({model, "0", "0-1"});
  EXPECT_EQ(dense.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(dense.status().message()), HasSubstr("dense"));
}

}  // namespace
}  // namespace moe
