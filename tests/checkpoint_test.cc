#include "common/checkpoint/checkpoint.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/checkpoint/json.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/safetensors_writer.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

std::vector<float> Iota(int n, float start) {
  std::vector<float> values(n);
  for (int i = 0; i < n; ++i) values[i] = start + i;
  return values;
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = absl::StrCat(::testing::TempDir(), "/checkpoint_test_", info->name(), "_", ::getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Path(absl::string_view name) const { return absl::StrCat(dir_, "/", name); }

  void WriteText(absl::string_view name, const std::string& text) const {
    std::ofstream(Path(name), std::ios::binary) << text;
  }

  // Five tensors of different sizes and dtypes.
  static std::vector<TensorToWrite> SampleTensors() {
    return {{"embed", DType::kF32, {4, 3}, Iota(12, 0)},
            {"layer0.bias", DType::kF32, {3}, Iota(3, 100)},
            {"layer0.weight", DType::kBF16, {3, 2}, Iota(6, 10)},
            {"layer1.weight", DType::kF16, {2, 2}, Iota(4, 20)},
            {"norm", DType::kF32, {3}, {0.5f, 1.5f, 2.5f}}};
  }

  void ExpectReadsSampleTensors(Checkpoint& checkpoint) {
    auto embed = checkpoint.ReadMatrix("embed", 4, 3);
    ASSERT_TRUE(embed.ok()) << embed.status();
    EXPECT_THAT(embed->values(), ::testing::ElementsAreArray(Iota(12, 0)));
    auto weight = checkpoint.ReadMatrix("layer0.weight", 3, 2);
    ASSERT_TRUE(weight.ok()) << weight.status();
    EXPECT_THAT(weight->values(),
                ::testing::ElementsAreArray(Iota(6, 10)));  // small integers are exact in bf16
    auto weight1 = checkpoint.ReadMatrix("layer1.weight", 2, 2);
    ASSERT_TRUE(weight1.ok()) << weight1.status();
    EXPECT_THAT(weight1->values(), ::testing::ElementsAreArray(Iota(4, 20)));
    auto bias = checkpoint.ReadVector("layer0.bias", 3);
    ASSERT_TRUE(bias.ok()) << bias.status();
    EXPECT_EQ(*bias, Iota(3, 100));
    auto norm = checkpoint.ReadVector("norm", 3);
    ASSERT_TRUE(norm.ok()) << norm.status();
    EXPECT_EQ(*norm, (std::vector<float>{0.5f, 1.5f, 2.5f}));
    auto info = checkpoint.Info("layer1.weight");
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->dtype, DType::kF16);
  }

  std::string dir_;
};

TEST_F(CheckpointTest, SingleFileCheckpointRoundTrips) {
  ASSERT_TRUE(WriteCheckpointTensors(dir_, SampleTensors(), 1).ok());
  EXPECT_TRUE(std::filesystem::exists(Path("model.safetensors")));
  EXPECT_FALSE(std::filesystem::exists(Path("model.safetensors.index.json")));
  auto checkpoint = Checkpoint::Open(dir_);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_TRUE((*checkpoint)->Contains("norm"));
  EXPECT_FALSE((*checkpoint)->Contains("nope"));
  ExpectReadsSampleTensors(**checkpoint);
}

TEST_F(CheckpointTest, ShardedCheckpointRoundTrips) {
  ASSERT_TRUE(WriteCheckpointTensors(dir_, SampleTensors(), 3).ok());
  for (const char* name : {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                           "model-00003-of-00003.safetensors", "model.safetensors.index.json"}) {
    EXPECT_TRUE(std::filesystem::exists(Path(name))) << name;
  }
  EXPECT_FALSE(std::filesystem::exists(Path("model.safetensors")));
  auto checkpoint = Checkpoint::Open(dir_);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  ExpectReadsSampleTensors(**checkpoint);
}

TEST_F(CheckpointTest, RemovingAnEarlierCheckpointLeavesOtherFiles) {
  ASSERT_TRUE(WriteCheckpointTensors(dir_, SampleTensors(), 3).ok());
  WriteText("config.json", "{}");
  const std::vector<std::string> others = {"notes.txt", "model-a-of-3.safetensors",
                                           "model-00001-of-00003.safetensors.tmp", "model.bin"};
  for (const std::string& name : others) WriteText(name, "keep");

  absl::StatusOr<int> removed = RemoveCheckpointFiles(dir_);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 5);  // three shards, the index, config.json
  std::vector<std::string> left;
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    left.push_back(entry.path().filename().string());
  }
  EXPECT_THAT(left, ::testing::UnorderedElementsAreArray(others));
  EXPECT_EQ(RemoveCheckpointFiles(Path("no-such-dir")).value_or(-1), 0);
}

TEST_F(CheckpointTest, ShardIndexRecordsTotalSizeAndEveryTensor) {
  ASSERT_TRUE(WriteCheckpointTensors(dir_, SampleTensors(), 3).ok());
  std::ifstream in(Path("model.safetensors.index.json"));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto index = ParseJsonObject(text, "index");
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(index->at("metadata").at("total_size").get<int64_t>(),
            12 * 4 + 3 * 4 + 6 * 2 + 4 * 2 + 12);
  EXPECT_EQ(index->at("weight_map").size(), 5u);
}

TEST_F(CheckpointTest, ShardsAreContiguousNonEmptyAndBalancedByBytes) {
  std::vector<TensorToWrite> tensors;
  for (const char* name : {"a", "b", "c", "d"}) {
    tensors.push_back({name, DType::kF32, {8}, Iota(8, 0)});
  }
  ASSERT_TRUE(WriteCheckpointTensors(dir_, tensors, 2).ok());
  auto checkpoint = Checkpoint::Open(dir_);
  ASSERT_TRUE(checkpoint.ok());
  std::vector<std::string> files;
  for (const char* name : {"a", "b", "c", "d"}) {
    auto file = (*checkpoint)->FileFor(name);
    ASSERT_TRUE(file.ok());
    files.push_back(std::filesystem::path((*file)->path()).filename());
  }
  EXPECT_EQ(files, (std::vector<std::string>{
                       "model-00001-of-00002.safetensors", "model-00001-of-00002.safetensors",
                       "model-00002-of-00002.safetensors", "model-00002-of-00002.safetensors"}));
}

TEST_F(CheckpointTest, RejectsMoreShardsThanTensorsOrFewerThanOne) {
  EXPECT_EQ(WriteCheckpointTensors(dir_, SampleTensors(), 6).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteCheckpointTensors(dir_, SampleTensors(), 0).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(CheckpointTest, ReadMatrixReportsStoredAndExpectedShape) {
  ASSERT_TRUE(WriteCheckpointTensors(dir_, SampleTensors(), 1).ok());
  auto checkpoint = Checkpoint::Open(dir_);
  ASSERT_TRUE(checkpoint.ok());
  auto matrix = (*checkpoint)->ReadMatrix("embed", 3, 4);
  EXPECT_EQ(matrix.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(matrix.status().message()),
              HasSubstr(absl::StrCat("tensor embed in ", Path("model.safetensors"),
                                     " has shape [4, 3], expected [3, 4]")));
}

TEST_F(CheckpointTest, ReadRefusesANanOrInfinityNamingItsPlace) {
  const float inf = std::numeric_limits<float>::infinity();
  ASSERT_TRUE(WriteCheckpointTensors(dir_,
                                     {{"f32", DType::kF32, {2, 3}, {0, 1, 2, 3, std::nanf(""), 5}},
                                      {"f16", DType::kF16, {2, 2}, {0, 1, 2, -inf}},
                                      {"bf16", DType::kBF16, {3}, {0, inf, 2}},
                                      {"fine", DType::kF32, {2}, {-1e30f, 1e30f}}},
                                     1)
                  .ok());
  auto checkpoint = Checkpoint::Open(dir_);
  ASSERT_TRUE(checkpoint.ok());
  const std::string file = Path("model.safetensors");
  auto f32 = (*checkpoint)->ReadMatrix("f32", 2, 3);
  EXPECT_EQ(f32.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(f32.status().message()),
              HasSubstr(absl::StrCat("tensor f32 in ", file, " holds nan at [1, 1]")));
  EXPECT_THAT(std::string((*checkpoint)->ReadMatrix("f16", 2, 2).status().message()),
              HasSubstr(absl::StrCat("tensor f16 in ", file, " holds -inf at [1, 1]")));
  EXPECT_THAT(std::string((*checkpoint)->ReadVector("bf16", 3).status().message()),
              HasSubstr(absl::StrCat("tensor bf16 in ", file, " holds inf at [1]")));
  EXPECT_TRUE((*checkpoint)->ReadVector("fine", 2).ok());
}

TEST_F(CheckpointTest, ReadVectorRejectsAMatrix) {
  ASSERT_TRUE(WriteCheckpointTensors(dir_, SampleTensors(), 1).ok());
  auto checkpoint = Checkpoint::Open(dir_);
  ASSERT_TRUE(checkpoint.ok());
  auto vector = (*checkpoint)->ReadVector("embed", 12);
  EXPECT_EQ(vector.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(vector.status().message()), HasSubstr("expected [12]"));
}

TEST_F(CheckpointTest, MissingTensorIsNotFound) {
  ASSERT_TRUE(WriteCheckpointTensors(dir_, SampleTensors(), 2).ok());
  auto checkpoint = Checkpoint::Open(dir_);
  ASSERT_TRUE(checkpoint.ok());
  for (const absl::Status& status :
       {(*checkpoint)->Info("nope").status(), (*checkpoint)->ReadVector("nope", 1).status(),
        (*checkpoint)->FileFor("nope").status()}) {
    EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
    EXPECT_THAT(std::string(status.message()),
                HasSubstr(absl::StrCat("tensor 'nope' not found in checkpoint ", dir_)));
  }
}

TEST_F(CheckpointTest, RejectsIndexFileNamesOutsideTheDirectory) {
  for (const char* file : {"../x.safetensors", "..", "sub/x.safetensors", "/etc/passwd"}) {
    WriteText("model.safetensors.index.json",
              absl::StrCat(R"({"weight_map":{"w":")", file, R"("}})"));
    auto checkpoint = Checkpoint::Open(dir_);
    EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kInvalidArgument) << file;
    EXPECT_THAT(std::string(checkpoint.status().message()), HasSubstr(file));
  }
}

TEST_F(CheckpointTest, RejectsIndexWithoutWeightMap) {
  WriteText("model.safetensors.index.json", R"({"metadata":{}})");
  auto checkpoint = Checkpoint::Open(dir_);
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(checkpoint.status().message()), HasSubstr("weight_map"));
}

TEST_F(CheckpointTest, DirectoryWithNeitherFileIsNotFound) {
  auto checkpoint = Checkpoint::Open(dir_);
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kNotFound);
  const std::string message(checkpoint.status().message());
  EXPECT_THAT(message, HasSubstr("model.safetensors.index.json"));
  EXPECT_THAT(message, HasSubstr(dir_));
}

TEST_F(CheckpointTest, IndexNamingAFileThatLacksTheTensorIsNotFound) {
  ASSERT_TRUE(WriteSafetensorsFile(Path("shard.safetensors"), {{"a", DType::kF32, {1}, {1}}}).ok());
  WriteText("model.safetensors.index.json",
            R"({"weight_map":{"a":"shard.safetensors","b":"shard.safetensors"}})");
  auto checkpoint = Checkpoint::Open(dir_);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_TRUE((*checkpoint)->Info("a").ok());
  auto info = (*checkpoint)->Info("b");
  EXPECT_EQ(info.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(info.status().message()), HasSubstr("'b'"));
  EXPECT_THAT(std::string(info.status().message()), HasSubstr("shard.safetensors"));
}

TEST_F(CheckpointTest, OpensShardFilesOnlyWhenTheyAreRead) {
  ASSERT_TRUE(WriteCheckpointTensors(dir_, SampleTensors(), 3).ok());
  auto checkpoint = Checkpoint::Open(dir_);
  ASSERT_TRUE(checkpoint.ok());
  // Corrupting the last shard after Open only affects tensors stored in it.
  WriteText("model-00003-of-00003.safetensors", "garbage!garbage!");
  EXPECT_TRUE((*checkpoint)->ReadMatrix("embed", 4, 3).ok());
  EXPECT_EQ((*checkpoint)->ReadVector("norm", 3).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(CheckpointTest, ReadConfigTextReturnsTheFileOrNotFound) {
  ASSERT_TRUE(WriteCheckpointTensors(dir_, SampleTensors(), 1).ok());
  auto checkpoint = Checkpoint::Open(dir_);
  ASSERT_TRUE(checkpoint.ok());
  EXPECT_EQ((*checkpoint)->ReadConfigText().status().code(), absl::StatusCode::kNotFound);
  WriteText("config.json", R"({"hidden_size": 3})");
  auto text = (*checkpoint)->ReadConfigText();
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, R"({"hidden_size": 3})");
}

TEST_F(CheckpointTest, AConfigThatNeverEndsIsRefusedNotReadForever) {
  ASSERT_TRUE(WriteCheckpointTensors(dir_, SampleTensors(), 1).ok());
  std::filesystem::create_symlink("/dev/zero", dir_ + "/config.json");
  auto checkpoint = Checkpoint::Open(dir_);
  ASSERT_TRUE(checkpoint.ok());
  const absl::Status status = (*checkpoint)->ReadConfigText().status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("larger than 64 MiB"));
}

}  // namespace
}  // namespace moe
