// Messages a new user meets first: a mistyped model directory, a negative expert id, a layer past
// the model's end. Each names the actual problem in words.
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "common/checkpoint/checkpoint.h"
#include "common/checkpoint/model_config.h"
#include "common/routing/expert_set.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string TempDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/user_messages_test_" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

TEST(UserMessagesTest, MissingCheckpointDirectorySaysItDoesNotExist) {
  const std::string dir = TempDir("missing") + "/no-such-model";
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(dir);
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(checkpoint.status().message(), "checkpoint directory " + dir + " does not exist");
}

TEST(UserMessagesTest, CheckpointPathThatIsAFileSaysItIsNotADirectory) {
  const std::string dir = TempDir("file");
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/config.json") << "{}";
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(dir + "/config.json");
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_THAT(std::string(checkpoint.status().message()), HasSubstr("is not a directory"));
}

TEST(UserMessagesTest, EmptyCheckpointDirectoryStillNamesTheMissingFiles) {
  const std::string dir = TempDir("empty");
  std::filesystem::create_directories(dir);
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(dir);
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_THAT(std::string(checkpoint.status().message()), HasSubstr("model.safetensors"));
  EXPECT_THAT(std::string(checkpoint.status().message()), Not(HasSubstr("does not exist")));
}

TEST(UserMessagesTest, NegativeExpertIdSaysIdsStartAtZero) {
  absl::StatusOr<ExpertSet> set = ParseExpertSet("-1", 8, /*allow_shared=*/false);
  ASSERT_FALSE(set.ok());
  EXPECT_EQ(set.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(set.status().message(), "expert set \"-1\": \"-1\" is negative; expert ids start at 0");
}

TEST(UserMessagesTest, RangeWithoutLastExpertSaysSo) {
  absl::StatusOr<ExpertSet> set = ParseExpertSet("0,4-", 8, /*allow_shared=*/false);
  ASSERT_FALSE(set.ok());
  EXPECT_EQ(set.status().message(),
            "expert set \"0,4-\": range \"4-\" has no last expert (FIRST-LAST)");
}

TEST(UserMessagesTest, LayerOutOfRangeOfAOneLayerModelSaysOneLayer) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(
      R"({"model_type": "mixtral", "hidden_size": 8, "num_hidden_layers": 1,
          "num_experts_per_tok": 2, "num_local_experts": 4, "intermediate_size": 16})",
      "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  absl::Status status = CheckMoeLayer(*config, 3);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("the model has 1 layer (num_hidden_layers)"));
}

}  // namespace
}  // namespace moe
