#include "common/checkpoint/json.h"

#include <cmath>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moe {
namespace {

constexpr int kMaxJsonDepth = 64;
constexpr double kMaxExactInt = 9007199254740992.0;  // 2^53

// nlohmann's parser recurses once per nesting level, so a hostile "[[[[..." header could exhaust
// the stack; refuse deep nesting before parsing.
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

const Json* FindValue(const Json& obj, absl::string_view key) {
  auto it = obj.find(std::string(key));
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::Status WrongType(absl::string_view key, absl::string_view what, absl::string_view expected) {
  return absl::InvalidArgumentError(absl::StrCat(what, ": key \"", key, "\" must be ", expected));
}

}  // namespace

absl::StatusOr<Json> ParseJsonObject(absl::string_view text, absl::string_view what) {
  if (NestsTooDeep(text)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": JSON nested deeper than ", kMaxJsonDepth, " levels"));
  }
  Json parsed;
  try {
    parsed = Json::parse(text.begin(), text.end());
  } catch (const Json::exception& error) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": not a valid JSON object: ", error.what()));
  }
  if (!parsed.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": not a valid JSON object: the top level is a ", parsed.type_name()));
  }
  return parsed;
}

absl::StatusOr<int64_t> JsonToInt(const Json& value, int64_t min_value, absl::string_view what) {
  auto invalid = [&](const std::string& got) {
    // The floor of a key with no floor of its own (INT64_MIN / 2, JsonInt) is not worth naming.
    const std::string floor = min_value > INT64_MIN / 2 ? absl::StrCat(" >= ", min_value) : "";
    return absl::InvalidArgumentError(
        absl::StrCat(what, " must be a whole number", floor, ", got ", got));
  };
  if (value.is_number_unsigned()) {
    const uint64_t u = value.get<uint64_t>();
    if (u > static_cast<uint64_t>(kMaxExactInt)) return invalid(absl::StrCat(u));
    if (static_cast<int64_t>(u) < min_value) return invalid(absl::StrCat(u));
    return static_cast<int64_t>(u);
  }
  if (value.is_number_integer()) {
    const int64_t i = value.get<int64_t>();
    if (i < min_value) return invalid(absl::StrCat(i));
    return i;
  }
  if (!value.is_number()) return invalid(value.type_name());
  const double d = value.get<double>();
  if (!std::isfinite(d) || d != std::floor(d) || d < static_cast<double>(min_value) ||
      d > kMaxExactInt) {
    return invalid(absl::StrCat(d));
  }
  return static_cast<int64_t>(d);
}

absl::StatusOr<std::optional<int64_t>> JsonInt(const Json& obj, absl::string_view key,
                                               absl::string_view what) {
  const Json* v = FindValue(obj, key);
  if (v == nullptr) return std::optional<int64_t>();
  if (!v->is_number()) return WrongType(key, what, "an integer");
  auto as_int = JsonToInt(*v, INT64_MIN / 2, absl::StrCat(what, ": key \"", key, "\""));
  if (!as_int.ok()) return as_int.status();
  return std::optional<int64_t>(*as_int);
}

absl::StatusOr<std::optional<double>> JsonNumber(const Json& obj, absl::string_view key,
                                                 absl::string_view what) {
  const Json* v = FindValue(obj, key);
  if (v == nullptr) return std::optional<double>();
  if (!v->is_number()) return WrongType(key, what, "a number");
  return std::optional<double>(v->get<double>());
}

absl::StatusOr<std::optional<bool>> JsonBool(const Json& obj, absl::string_view key,
                                             absl::string_view what) {
  const Json* v = FindValue(obj, key);
  if (v == nullptr) return std::optional<bool>();
  if (!v->is_boolean()) return WrongType(key, what, "true or false");
  return std::optional<bool>(v->get<bool>());
}

absl::StatusOr<std::optional<std::string>> JsonString(const Json& obj, absl::string_view key,
                                                      absl::string_view what) {
  const Json* v = FindValue(obj, key);
  if (v == nullptr) return std::optional<std::string>();
  if (!v->is_string()) return WrongType(key, what, "a string");
  return std::optional<std::string>(v->get<std::string>());
}

}  // namespace moe
