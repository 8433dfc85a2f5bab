#include "common/json.h"

#include <cmath>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"

namespace moe {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

const Value* FindValue(const Struct& obj, absl::string_view key) {
  auto it = obj.fields().find(std::string(key));
  if (it == obj.fields().end() || it->second.kind_case() == Value::kNullValue) return nullptr;
  return &it->second;
}

absl::Status WrongType(absl::string_view key, absl::string_view what, absl::string_view expected) {
  return absl::InvalidArgumentError(absl::StrCat(what, ": key \"", key, "\" must be ", expected));
}

// protobuf's JSON parser takes time quadratic in the nesting depth of arrays, so a hostile
// "[[[[..." header of a few hundred kilobytes would stall it for minutes. No file we read nests
// more than a handful of levels.
constexpr int kMaxJsonDepth = 64;

bool NestsTooDeep(absl::string_view text) {
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

}  // namespace

absl::StatusOr<Struct> ParseJsonObject(absl::string_view text, absl::string_view what) {
  if (NestsTooDeep(text)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": JSON nested deeper than ", kMaxJsonDepth, " levels"));
  }
  Struct obj;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(text.data(), text.size()), &obj, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": not a valid JSON object: ", status.message().as_string()));
  }
  return obj;
}

absl::StatusOr<int64_t> JsonNumberToInt(double value, int64_t min_value, absl::string_view what) {
  constexpr double kMaxExact = 9007199254740992.0;  // 2^53
  if (!std::isfinite(value) || value != std::floor(value) ||
      value < static_cast<double>(min_value) || value > kMaxExact) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " must be a whole number >= ", min_value, ", got ", value));
  }
  return static_cast<int64_t>(value);
}

absl::StatusOr<std::optional<int64_t>> JsonInt(const Struct& obj, absl::string_view key,
                                               absl::string_view what) {
  const Value* v = FindValue(obj, key);
  if (v == nullptr) return std::optional<int64_t>();
  if (v->kind_case() != Value::kNumberValue) return WrongType(key, what, "an integer");
  auto as_int =
      JsonNumberToInt(v->number_value(), INT64_MIN / 2, absl::StrCat(what, ": key \"", key, "\""));
  if (!as_int.ok()) return as_int.status();
  return std::optional<int64_t>(*as_int);
}

absl::StatusOr<std::optional<double>> JsonNumber(const Struct& obj, absl::string_view key,
                                                 absl::string_view what) {
  const Value* v = FindValue(obj, key);
  if (v == nullptr) return std::optional<double>();
  if (v->kind_case() != Value::kNumberValue) return WrongType(key, what, "a number");
  return std::optional<double>(v->number_value());
}

absl::StatusOr<std::optional<bool>> JsonBool(const Struct& obj, absl::string_view key,
                                             absl::string_view what) {
  const Value* v = FindValue(obj, key);
  if (v == nullptr) return std::optional<bool>();
  if (v->kind_case() != Value::kBoolValue) return WrongType(key, what, "true or false");
  return std::optional<bool>(v->bool_value());
}

absl::StatusOr<std::optional<std::string>> JsonString(const Struct& obj, absl::string_view key,
                                                      absl::string_view what) {
  const Value* v = FindValue(obj, key);
  if (v == nullptr) return std::optional<std::string>();
  if (v->kind_case() != Value::kStringValue) return WrongType(key, what, "a string");
  return std::optional<std::string>(v->string_value());
}

}  // namespace moe
