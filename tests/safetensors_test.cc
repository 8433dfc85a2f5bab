#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/checkpoint/safetensors_file.h"
#include "common/tensor/dtype.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/safetensors_writer.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

class SafetensorsFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = absl::StrCat(::testing::TempDir(), "/safetensors_test_", info->name(), "_", ::getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Path(absl::string_view name) const { return absl::StrCat(dir_, "/", name); }

  // Writes `bytes` verbatim to a file in the test directory and returns its path.
  std::string WriteBytes(absl::string_view name, const std::string& bytes) const {
    const std::string path = Path(name);
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }

  // A safetensors file with header length `header_size`, then `header` and `data`.
  std::string WriteRaw(const std::string& header, const std::string& data,
                       uint64_t header_size) const {
    std::string bytes(reinterpret_cast<const char*>(&header_size), 8);
    return WriteBytes("raw.safetensors", bytes + header + data);
  }
  std::string WriteRaw(const std::string& header, const std::string& data) const {
    return WriteRaw(header, data, header.size());
  }

  // Opens `path`, expecting InvalidArgument; returns the message.
  std::string OpenError(const std::string& path) const {
    auto file = SafetensorsFile::Open(path);
    EXPECT_FALSE(file.ok());
    if (file.ok()) return "";
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << file.status();
    return std::string(file.status().message());
  }

  void ExpectRoundTrip(DType dtype) {
    const std::vector<float> values = {1.0f, -2.5f, 0.1f, 3.14159f, 1e-6f, 70000.0f};
    const std::string path = Path("rt.safetensors");
    ASSERT_TRUE(WriteSafetensorsFile(
                    path, {{"b.weight", dtype, {2, 3}, values}, {"a.bias", dtype, {1}, {0.5f}}})
                    .ok());
    auto file = SafetensorsFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status();
    ASSERT_EQ((*file)->tensors().size(), 2u);
    const TensorInfo* info = (*file)->Find("b.weight");
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->dtype, dtype);
    EXPECT_EQ(info->shape, (std::vector<int64_t>{2, 3}));
    auto read = (*file)->ReadF32("b.weight");
    ASSERT_TRUE(read.ok()) << read.status();
    ASSERT_EQ(read->size(), values.size());
    for (size_t i = 0; i < values.size(); ++i) {
      EXPECT_EQ((*read)[i], RoundTrip(values[i], dtype)) << "element " << i;
    }
    auto bias = (*file)->ReadF32("a.bias");
    ASSERT_TRUE(bias.ok());
    EXPECT_EQ(*bias, std::vector<float>{0.5f});
  }

  std::string dir_;
};

TEST_F(SafetensorsFileTest, RoundTripsF32Tensors) { ExpectRoundTrip(DType::kF32); }
TEST_F(SafetensorsFileTest, RoundTripsF16Tensors) { ExpectRoundTrip(DType::kF16); }
TEST_F(SafetensorsFileTest, RoundTripsBf16Tensors) { ExpectRoundTrip(DType::kBF16); }

TEST_F(SafetensorsFileTest, WriterPadsHeaderAndLaysTensorsOutInNameOrder) {
  const std::string path = Path("layout.safetensors");
  ASSERT_TRUE(WriteSafetensorsFile(
                  path, {{"z", DType::kF16, {3}, {1, 2, 3}}, {"a", DType::kF32, {2}, {4, 5}}})
                  .ok());
  std::ifstream in(path, std::ios::binary);
  uint64_t header_size = 0;
  in.read(reinterpret_cast<char*>(&header_size), 8);
  EXPECT_EQ(header_size % 8, 0u);
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const TensorInfo* a = (*file)->Find("a");
  const TensorInfo* z = (*file)->Find("z");
  ASSERT_TRUE(a != nullptr && z != nullptr);
  EXPECT_EQ(a->begin, 0u);
  EXPECT_EQ(a->end, 8u);
  EXPECT_EQ(z->begin, 8u);
  EXPECT_EQ(z->end, 14u);
}

TEST_F(SafetensorsFileTest, WriterRejectsValueCountNotMatchingShape) {
  absl::Status status =
      WriteSafetensorsFile(Path("bad.safetensors"), {{"w", DType::kF32, {2, 2}, {1, 2, 3}}});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("needs 4 values, got 3"));
}

TEST_F(SafetensorsFileTest, AcceptsZeroElementTensors) {
  const std::string path = Path("empty_tensor.safetensors");
  ASSERT_TRUE(WriteSafetensorsFile(path, {{"e", DType::kBF16, {0, 4}, {}}}).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  auto read = (*file)->ReadF32("e");
  ASSERT_TRUE(read.ok());
  EXPECT_TRUE(read->empty());
  EXPECT_EQ((*file)->Find("e")->num_elements(), 0);
}

TEST_F(SafetensorsFileTest, ReadsFromAnUnalignedDataSection) {
  // A 5-byte-off header leaves the data section misaligned for float loads.
  const std::string header = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  ASSERT_NE((8 + header.size()) % 4, 0u);
  const float values[2] = {1.5f, -3.0f};
  auto file = SafetensorsFile::Open(
      WriteRaw(header, std::string(reinterpret_cast<const char*>(values), sizeof(values))));
  ASSERT_TRUE(file.ok()) << file.status();
  auto read = (*file)->ReadF32("x");
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(*read, (std::vector<float>{1.5f, -3.0f}));
  auto raw = (*file)->RawData("x");
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->size(), 8u);
}

TEST_F(SafetensorsFileTest, AcceptsStringMetadata) {
  auto file = SafetensorsFile::Open(WriteRaw(R"({"__metadata__":{"format":"pt"}})", ""));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE((*file)->tensors().empty());
}

TEST_F(SafetensorsFileTest, RejectsMetadataWithNonStringValues) {
  EXPECT_THAT(OpenError(WriteRaw(R"({"__metadata__":{"n":3}})", "")), HasSubstr("__metadata__"));
}

TEST_F(SafetensorsFileTest, MissingFileIsNotFound) {
  auto file = SafetensorsFile::Open(Path("does_not_exist.safetensors"));
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("does_not_exist.safetensors"));
}

TEST_F(SafetensorsFileTest, RejectsEmptyFile) {
  const std::string path = WriteBytes("empty.safetensors", "");
  const std::string message = OpenError(path);
  EXPECT_THAT(message, HasSubstr(path));
  EXPECT_THAT(message, HasSubstr("0 bytes"));
}

TEST_F(SafetensorsFileTest, RejectsFileShorterThanHeaderLength) {
  EXPECT_THAT(OpenError(WriteBytes("short.safetensors", "abc")), HasSubstr("3 bytes"));
}

TEST_F(SafetensorsFileTest, RejectsTruncatedDataSection) {
  const std::string path = Path("cut.safetensors");
  ASSERT_TRUE(WriteSafetensorsFile(path, {{"w", DType::kF32, {4}, {1, 2, 3, 4}}}).ok());
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 4);
  const std::string message = OpenError(path);
  EXPECT_THAT(message, HasSubstr("'w'"));
  EXPECT_THAT(message, HasSubstr("out of range"));
}

TEST_F(SafetensorsFileTest, RejectsHeaderLengthPastEndOfFile) {
  const std::string header = R"({})";
  const std::string message = OpenError(WriteRaw(header, "", 1000));
  EXPECT_THAT(message, HasSubstr("header length 1000"));
  EXPECT_THAT(message, HasSubstr("file size 10 bytes"));
}

TEST_F(SafetensorsFileTest, RejectsHugeHeaderLength) {
  EXPECT_THAT(OpenError(WriteRaw("{}", "", uint64_t{1} << 63)), HasSubstr("100 MB"));
  EXPECT_THAT(OpenError(WriteRaw("{}", "", ~uint64_t{0})), HasSubstr("exceeds"));
}

TEST_F(SafetensorsFileTest, RejectsOverlappingTensors) {
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  const std::string message = OpenError(WriteRaw(header, std::string(12, '\0')));
  EXPECT_THAT(message, HasSubstr("overlap"));
  EXPECT_THAT(message, HasSubstr("'a'"));
  EXPECT_THAT(message, HasSubstr("'b'"));
}

TEST_F(SafetensorsFileTest, RejectsOffsetsPastTheDataSection) {
  const std::string header = R"({"w":{"dtype":"F16","shape":[4],"data_offsets":[8,16]}})";
  const std::string message = OpenError(WriteRaw(header, std::string(12, '\0')));
  EXPECT_THAT(message, HasSubstr("'w'"));
  EXPECT_THAT(message, HasSubstr("out of range of the 12-byte data section"));
}

TEST_F(SafetensorsFileTest, RejectsOffsetsThatEndBeforeTheyBegin) {
  const std::string header = R"({"w":{"dtype":"F16","shape":[0],"data_offsets":[8,4]}})";
  EXPECT_THAT(OpenError(WriteRaw(header, std::string(12, '\0'))), HasSubstr("out of range"));
}

TEST_F(SafetensorsFileTest, RejectsUnsupportedDtypes) {
  for (const char* dtype : {"I64", "F8_E4M3"}) {
    const std::string header =
        absl::StrCat(R"({"ids":{"dtype":")", dtype, R"(","shape":[1],"data_offsets":[0,8]}})");
    const std::string message = OpenError(WriteRaw(header, std::string(8, '\0')));
    EXPECT_THAT(message, HasSubstr("'ids'"));
    EXPECT_THAT(message, HasSubstr(dtype));
    EXPECT_THAT(message, HasSubstr("F32, F16, BF16"));
  }
}

TEST_F(SafetensorsFileTest, RejectsShapeThatDoesNotMatchByteSize) {
  const std::string header = R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})";
  const std::string message = OpenError(WriteRaw(header, std::string(8, '\0')));
  EXPECT_THAT(message, HasSubstr("'w'"));
  EXPECT_THAT(message, HasSubstr("span 8 bytes"));
  EXPECT_THAT(message, HasSubstr("needs 12 bytes"));
}

TEST_F(SafetensorsFileTest, RejectsShapeWhoseByteSizeOverflows) {
  // 4 bytes * 2^53 * 2^53 * 4 = 2^110, which wraps to 0 in 64 bits and would match [0, 0].
  const std::string header = R"({"w":{"dtype":"F32","shape":[9007199254740992,9007199254740992,4],)"
                             R"("data_offsets":[0,0]}})";
  EXPECT_THAT(OpenError(WriteRaw(header, "")), HasSubstr("too large"));
}

TEST_F(SafetensorsFileTest, RejectsNegativeAndFractionalDimensions) {
  EXPECT_THAT(OpenError(WriteRaw(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", "")),
              HasSubstr("shape"));
  EXPECT_THAT(OpenError(WriteRaw(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,6]}})",
                                 std::string(6, '\0'))),
              HasSubstr("shape"));
}

TEST_F(SafetensorsFileTest, RejectsEntriesMissingFields) {
  EXPECT_THAT(OpenError(WriteRaw(R"({"w":{"shape":[0],"data_offsets":[0,0]}})", "")),
              HasSubstr("dtype"));
  EXPECT_THAT(OpenError(WriteRaw(R"({"w":{"dtype":"F32","data_offsets":[0,0]}})", "")),
              HasSubstr("shape"));
  EXPECT_THAT(OpenError(WriteRaw(R"({"w":{"dtype":"F32","shape":[0]}})", "")),
              HasSubstr("data_offsets"));
  EXPECT_THAT(OpenError(WriteRaw(R"({"w":[1,2]})", "")), HasSubstr("'w'"));
}

TEST_F(SafetensorsFileTest, RejectsHeaderThatIsNotJson) {
  EXPECT_THAT(OpenError(WriteRaw("this is not json", "")), HasSubstr("JSON"));
}

TEST_F(SafetensorsFileTest, RejectsHeaderThatIsAJsonArray) {
  EXPECT_THAT(OpenError(WriteRaw("[1, 2, 3]", "")), HasSubstr("JSON object"));
}

TEST_F(SafetensorsFileTest, RejectsDeeplyNestedHeader) {
  const std::string header =
      R"({"w":{"dtype":"F32","shape":)" + std::string(1000, '[') + std::string(1000, ']') + "}}";
  EXPECT_THAT(OpenError(WriteRaw(header, "")), HasSubstr("nested deeper"));
}

TEST_F(SafetensorsFileTest, MissingTensorIsNotFoundNamingTensorAndFile) {
  const std::string path = Path("one.safetensors");
  ASSERT_TRUE(WriteSafetensorsFile(path, {{"w", DType::kF32, {1}, {1}}}).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->Find("nope"), nullptr);
  for (const absl::Status& status :
       {(*file)->RawData("nope").status(), (*file)->ReadF32("nope").status()}) {
    EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
    EXPECT_THAT(std::string(status.message()), HasSubstr("'nope'"));
    EXPECT_THAT(std::string(status.message()), HasSubstr(path));
  }
}

TEST_F(SafetensorsFileTest, NeverCrashesOnTruncatedOrMutatedFiles) {
  const std::string good_path = Path("good.safetensors");
  ASSERT_TRUE(WriteSafetensorsFile(good_path, {{"a", DType::kF16, {2, 3}, {1, 2, 3, 4, 5, 6}},
                                               {"b", DType::kF32, {2}, {7, 8}}})
                  .ok());
  std::ifstream in(good_path, std::ios::binary);
  const std::string good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto read_everything = [&](const std::string& bytes) {
    auto file = SafetensorsFile::Open(WriteBytes("mutant.safetensors", bytes));
    if (!file.ok()) return;
    for (const auto& entry : (*file)->tensors()) {
      auto values = (*file)->ReadF32(entry.first);
      EXPECT_TRUE(values.ok());
    }
  };
  for (size_t length = 0; length < good.size(); ++length) {
    read_everything(good.substr(0, length));
    EXPECT_FALSE(SafetensorsFile::Open(Path("mutant.safetensors")).ok()) << "length " << length;
  }
  std::mt19937 rng(42);
  for (int i = 0; i < 500; ++i) {
    std::string mutant = good;
    mutant[rng() % mutant.size()] = static_cast<char>(rng() % 256);
    read_everything(mutant);
  }
}

}  // namespace
}  // namespace moe
