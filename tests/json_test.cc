#include "common/checkpoint/json.h"

#include <cmath>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

Json Parse(const std::string& text) {
  auto obj = ParseJsonObject(text, "test.json");
  EXPECT_TRUE(obj.ok()) << obj.status();
  return obj.ok() ? *obj : Json::object();
}

TEST(JsonTest, ParsesAnObjectAndReadsTypedFields) {
  const auto obj = Parse(R"({"n": 42, "x": 0.25, "b": true, "s": "hi", "z": null})");
  EXPECT_EQ(*JsonInt(obj, "n", "test.json"), 42);
  EXPECT_EQ(*JsonNumber(obj, "x", "test.json"), 0.25);
  EXPECT_EQ(*JsonBool(obj, "b", "test.json"), true);
  EXPECT_EQ(*JsonString(obj, "s", "test.json"), "hi");
}

TEST(JsonTest, AbsentAndNullKeysAreNullopt) {
  const auto obj = Parse(R"({"z": null})");
  EXPECT_FALSE(JsonInt(obj, "z", "test.json")->has_value());
  EXPECT_FALSE(JsonString(obj, "missing", "test.json")->has_value());
  EXPECT_FALSE(JsonBool(obj, "missing", "test.json")->has_value());
  EXPECT_FALSE(JsonNumber(obj, "missing", "test.json")->has_value());
}

TEST(JsonTest, RejectsTextThatIsNotAJsonObject) {
  for (const char* text : {"not json", "[1, 2]", "{\"a\": }", ""}) {
    auto obj = ParseJsonObject(text, "config.json");
    EXPECT_EQ(obj.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(std::string(obj.status().message()), HasSubstr("config.json")) << text;
  }
}

TEST(JsonTest, RejectsDeepNestingBeforeParsing) {
  // The parser recurses once per level: deep nesting must be refused before it runs.
  const std::string deep = "{\"a\":" + std::string(5000, '[') + std::string(5000, ']') + "}";
  auto obj = ParseJsonObject(deep, "deep.json");
  EXPECT_EQ(obj.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(obj.status().message()), HasSubstr("nested deeper"));
}

TEST(JsonTest, BracketsInsideStringsDoNotCountAsNesting) {
  const auto obj = Parse("{\"s\": \"\\\"" + std::string(100, '[') + "\"}");
  EXPECT_EQ(JsonString(obj, "s", "test.json")->value(), "\"" + std::string(100, '['));
}

TEST(JsonTest, WrongTypesNameTheKeyAndTheSource) {
  const auto obj = Parse(R"({"n": "seven", "s": 7, "b": 1, "x": "1.0"})");
  const absl::Status statuses[] = {
      JsonInt(obj, "n", "test.json").status(), JsonString(obj, "s", "test.json").status(),
      JsonBool(obj, "b", "test.json").status(), JsonNumber(obj, "x", "test.json").status()};
  const char* keys[] = {"\"n\"", "\"s\"", "\"b\"", "\"x\""};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(statuses[i].code(), absl::StatusCode::kInvalidArgument) << keys[i];
    EXPECT_THAT(std::string(statuses[i].message()), HasSubstr(keys[i]));
    EXPECT_THAT(std::string(statuses[i].message()), HasSubstr("test.json"));
  }
}

TEST(JsonTest, JsonIntRejectsFractions) {
  const auto obj = Parse(R"({"n": 1.5})");
  auto n = JsonInt(obj, "n", "test.json");
  EXPECT_EQ(n.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(n.status().message()), HasSubstr("\"n\""));
}

TEST(JsonTest, JsonToIntAcceptsWholeNumbersUpTo2To53) {
  EXPECT_EQ(*JsonToInt(Json(0), 0, "v"), 0);
  EXPECT_EQ(*JsonToInt(Json(7), 0, "v"), 7);
  EXPECT_EQ(*JsonToInt(Json(-3), -5, "v"), -3);
  EXPECT_EQ(*JsonToInt(Json(4.0), 0, "v"), 4);
  EXPECT_EQ(*JsonToInt(Json(std::ldexp(1.0, 53)), 0, "v"), int64_t{1} << 53);
  EXPECT_EQ(*JsonToInt(Json(uint64_t{1} << 53), 0, "v"), int64_t{1} << 53);
}

TEST(JsonTest, JsonToIntRejectsFractionsNegativesHugeValuesAndNonNumbers) {
  for (const Json& value :
       {Json(1.5), Json(-1), Json(-1.0), Json(std::ldexp(1.0, 60)), Json((uint64_t{1} << 53) + 1),
        Json(std::numeric_limits<double>::infinity()), Json("7"), Json(nullptr)}) {
    auto n = JsonToInt(value, 0, "the value");
    EXPECT_EQ(n.status().code(), absl::StatusCode::kInvalidArgument) << value.dump();
    EXPECT_THAT(std::string(n.status().message()), HasSubstr("the value"));
  }
}

}  // namespace
}  // namespace moe
