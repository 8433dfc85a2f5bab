// A whole model behind one deployment, with the real binaries: for every family's 4-layer
// decoder, two shards started with --layers=all (each holding half the experts of every MoE
// layer) and a router with --layers=all that learns them from bare targets. Every MoE layer's
// output must equal the independent reference, and each shard must hold (in Info and in resident
// memory) its share of all layers' expert weights and nothing more.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/cluster.h"
#include "testing/reference_layer.h"
#include "testing/test_models.h"

namespace moe {
namespace {

// The MoE layers of a preset: every layer but the dense ones.
std::vector<int> MoeLayers(const ModelPreset& preset) {
  std::vector<int> layers;
  for (int layer = 0; layer < preset.num_layers; ++layer) {
    const bool dense =
        layer < preset.first_k_dense ||
        std::count(preset.mlp_only_layers.begin(), preset.mlp_only_layers.end(), layer) > 0;
    if (!dense) layers.push_back(layer);
  }
  return layers;
}

std::vector<std::string> Halves(int num_experts) {
  const int half = num_experts / 2;
  return {absl::StrCat("0-", half - 1), absl::StrCat(half, "-", num_experts - 1)};
}

std::string CaseName(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  for (char& c : name) {
    if (c == '-') c = '_';
  }
  return name;
}

class WholeModelEndToEndTest : public ::testing::TestWithParam<std::string> {};

TEST_P(WholeModelEndToEndTest, EveryMoeLayerFromDiscoveredShardsMatchesReference) {
  const ModelPreset& preset = *FindPreset(GetParam());
  SyntheticModelOptions options;
  options.dtype = DType::kBF16;
  options.num_shards = 2;
  options.seed = 23;
  const std::string model = testing::WriteTestModel(preset.name, options);
  const std::vector<int> layers = MoeLayers(preset);
  ASSERT_GE(layers.size(), 3u);
  auto cluster = testing::Cluster::WholeModel(model, Halves(preset.num_experts));

  const v1::ModelInfo info = cluster->Info();
  EXPECT_EQ(info.family(), preset.model_type);
  EXPECT_THAT(info.layers(), ::testing::ElementsAreArray(layers));
  EXPECT_EQ(info.coverage_gaps(), "");
  ASSERT_EQ(info.shards_size(), 2);
  for (const v1::ShardInfo& shard : info.shards()) {
    EXPECT_EQ(shard.status(), "SERVING") << shard.problem();
    EXPECT_THAT(shard.layers(), ::testing::ElementsAreArray(layers));
    EXPECT_EQ(shard.experts_size(), preset.num_experts / 2);
  }

  // Each shard holds half the experts of every MoE layer (as fp32), and only those.
  const int64_t per_expert = 3 * preset.d_model * preset.expert_width * int64_t{sizeof(float)};
  for (int shard = 0; shard < 2; ++shard) {
    const v1::ExpertInfo expert_info = cluster->ExpertInfo(shard);
    EXPECT_THAT(expert_info.layers(), ::testing::ElementsAreArray(layers));
    EXPECT_EQ(expert_info.weight_bytes(),
              static_cast<int64_t>(layers.size()) * (preset.num_experts / 2) * per_expert);
  }

  const int64_t d = preset.d_model;
  for (int layer : layers) {
    auto reference = testing::ReferenceLayer::Load(model, layer);
    ASSERT_TRUE(reference.ok()) << reference.status();
    for (int64_t n : {1, 9}) {
      SCOPED_TRACE(absl::StrCat("layer ", layer, ", ", n, " tokens"));
      const std::vector<float> tokens = testing::RandomTokens(n, d, 100 * layer + n);
      v1::ForwardRequest request = testing::MakeRequest(tokens, n, d);
      request.set_layer(layer);
      v1::ForwardResponse response;
      const grpc::Status status = cluster->Forward(request, &response);
      ASSERT_TRUE(status.ok()) << status.error_message();
      const testing::ReferenceOutput expected = reference->Forward(tokens, n);
      for (int64_t t = 0; t < n; ++t) {
        EXPECT_LE(
            testing::RowRelativeError(response.output().values().data(), expected.output, t, d),
            1e-4)
            << "token " << t;
      }
    }
  }
  // Both shards did work for every layer (one call per shard per layer at most).
  for (int shard = 0; shard < 2; ++shard) {
    EXPECT_GT(cluster->ExpertInfo(shard).compute_calls(), 0);
    EXPECT_LE(cluster->ExpertInfo(shard).compute_calls(), 2 * static_cast<int>(layers.size()));
  }
}

INSTANTIATE_TEST_SUITE_P(Families, WholeModelEndToEndTest,
                         ::testing::Values("mixtral-tiny", "qwen2-moe-tiny", "qwen3-moe-tiny",
                                           "olmoe-tiny", "deepseek-v2-tiny", "deepseek-v3-tiny"),
                         CaseName);

// Resident memory, not only bookkeeping, on layers large enough to see: 4 MoE layers of 8
// experts at d 256 × 512 (1.5 MiB per expert, 48 MiB in all). A shard of 2 experts of every layer
// and a shard of all 8: their RSS differs by 6 experts × 4 layers.
TEST(WholeModelMemoryTest, ShardResidentMemoryIsItsShareOfAllLayers) {
  if (testing::kResidentMemoryInflated) GTEST_SKIP() << "ASan's shadow memory counts in VmRSS";
  ModelPreset preset = *FindPreset("mixtral-tiny");
  preset.name = "mixtral-4-layers-d256";
  preset.d_model = 256;
  preset.expert_width = 512;
  const std::string model = testing::MakeTempDir("memory_model");
  ASSERT_TRUE(WriteSyntheticModel(preset, {}, model).ok());
  const int64_t per_expert = 3 * 256 * 512 * int64_t{sizeof(float)};
  testing::Server two = testing::MustStart(testing::ExpertBinary(),
                                           {"--model=" + model, "--layers=all", "--experts=0-1"});
  testing::Server all = testing::MustStart(testing::ExpertBinary(),
                                           {"--model=" + model, "--layers=all", "--experts=all"});
  ASSERT_NE(two.process, nullptr);
  ASSERT_NE(all.process, nullptr);
  EXPECT_EQ(testing::ExpertInfoOf(two.target()).weight_bytes(), 4 * 2 * per_expert);
  EXPECT_EQ(testing::ExpertInfoOf(all.target()).weight_bytes(), 4 * 8 * per_expert);
  const double difference_mb =
      (testing::ResidentKb(all.process->pid()) - testing::ResidentKb(two.process->pid())) / 1024.0;
  const double expected_mb = 4.0 * 6.0 * per_expert / (1 << 20);  // 36 MiB
  EXPECT_NEAR(difference_mb, expected_mb, 0.2 * expected_mb);
}

}  // namespace
}  // namespace moe
