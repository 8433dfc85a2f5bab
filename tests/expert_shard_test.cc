// The expert shard core, in-process: the experts it loads, what it computes and on which threads.
#include "expert_service/expert_shard.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/checkpoint/layer_loader.h"
#include "common/checkpoint/safetensors_file.h"
#include "common/kernels/cpu_affinity.h"
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

// Overwrites element [row, col] of `tensor` in DIR/model.safetensors with the bits of `value` in
// the tensor's stored dtype (F32 or BF16), as a corrupt download or a broken conversion would.
void OverwriteElement(const std::string& dir, const std::string& tensor, int64_t row, int64_t col,
                      float value) {
  const std::string path = dir + "/model.safetensors";
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const TensorInfo* info = (*file)->Find(tensor);
  ASSERT_NE(info, nullptr) << tensor;
  uint64_t header_bytes = 0;
  std::ifstream(path, std::ios::binary).read(reinterpret_cast<char*>(&header_bytes), 8);
  const int64_t element_bytes = info->dtype == DType::kBF16 ? 2 : 4;
  ASSERT_TRUE(info->dtype == DType::kBF16 || info->dtype == DType::kF32);
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  const uint16_t bf16_bits = static_cast<uint16_t>(bits >> 16);  // NaN and ±inf stay so
  std::fstream out(path, std::ios::binary | std::ios::in | std::ios::out);
  out.seekp(static_cast<std::streamoff>(8 + header_bytes + info->begin +
                                        (row * info->shape[1] + col) * element_bytes));
  out.write(element_bytes == 2 ? reinterpret_cast<const char*>(&bf16_bits)
                               : reinterpret_cast<const char*>(&bits),
            element_bytes);
  ASSERT_TRUE(out.good());
}

// A NaN or infinity in an expert's weights (stored as F32 or BF16) stops a shard that loads that
// expert, in every weight storage, naming the tensor, the file and the element; a shard that does
// not hold that expert starts. (Served, it would answer every token routed there as an overflow of
// the client's input.)
TEST(ExpertShardCheckpointTest, RefusesAnExpertWhoseWeightsHoldANanOrInfinity) {
  const std::string tensor = "model.layers.0.block_sparse_moe.experts.3.w2.weight";
  for (const DType stored : {DType::kF32, DType::kBF16}) {
    for (const float bad : {std::nanf(""), -std::numeric_limits<float>::infinity()}) {
      SyntheticModelOptions options;
      options.dtype = stored;
      const std::string dir = testing::WriteTestModel("tiny", options);
      OverwriteElement(dir, tensor, 1, 2, bad);
      for (const WeightStorage storage :
           {WeightStorage::kF32, WeightStorage::kBF16, WeightStorage::kInt8}) {
        ExpertShardOptions all{dir, "0", "all"};
        all.weight_storage = storage;
        auto shard = ExpertShard::Create(all);
        const std::string context = absl::StrCat("stored ", DTypeName(stored), ", value ", bad,
                                                 ", storage ", static_cast<int>(storage));
        EXPECT_EQ(shard.status().code(), absl::StatusCode::kInvalidArgument) << context;
        EXPECT_THAT(std::string(shard.status().message()),
                    HasSubstr(absl::StrCat("tensor ", tensor, " in ", dir,
                                           "/model.safetensors holds ", bad, " at [1, 2]")))
            << context;
        ExpertShardOptions others{dir, "0", "0-2,4-7"};
        others.weight_storage = storage;
        EXPECT_TRUE(ExpertShard::Create(others).ok()) << context;
      }
    }
  }
}

// A float32 weight too large for bf16 (finite, but rounding to infinity) stops a shard that would
// keep it as bf16, and no other.
TEST(ExpertShardCheckpointTest, RefusesBf16StorageOfAWeightThatBf16RoundsToInfinity) {
  const std::string tensor = "model.layers.0.block_sparse_moe.experts.3.w1.weight";
  const std::string dir = testing::WriteTestModel("tiny");
  OverwriteElement(dir, tensor, 0, 5, 3.3962e38f);
  for (const WeightStorage storage :
       {WeightStorage::kF32, WeightStorage::kBF16, WeightStorage::kInt8}) {
    ExpertShardOptions options{dir, "0", "3"};
    options.weight_storage = storage;
    auto shard = ExpertShard::Create(options);
    if (storage != WeightStorage::kBF16) {
      EXPECT_TRUE(shard.ok()) << shard.status();
      continue;
    }
    EXPECT_EQ(shard.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(shard.status().message()),
                HasSubstr(absl::StrCat("tensor ", tensor, " in ", dir, "/model.safetensors holds ",
                                       3.3962e38f, " at [0, 5], which bf16 rounds to infinity")));
  }
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
