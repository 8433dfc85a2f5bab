// JSON access for the files a checkpoint holds (config.json, safetensors headers, the shard
// index), on nlohmann::json (Debian's nlohmann-json3-dev). Every error names the source file and
// the key, and never throws: parsing exceptions stay inside json.cc.
#ifndef MOE_COMMON_CHECKPOINT_JSON_H_
#define MOE_COMMON_CHECKPOINT_JSON_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace moe {

using Json = nlohmann::json;

// Parses `text` as a JSON object. `what` names the source (a file path) in error messages.
// InvalidArgument for malformed JSON, a top level that is not an object, or nesting deeper than
// 64 levels (no file we read nests more than a handful, and deep nesting costs stack).
absl::StatusOr<Json> ParseJsonObject(absl::string_view text, absl::string_view what);

// Typed field access on an object. Each returns std::nullopt when the key is absent or JSON null,
// and an error naming `key` and `what` when it is present with the wrong type (or, for integers,
// a value that is not a whole number in range).
absl::StatusOr<std::optional<int64_t>> JsonInt(const Json& obj, absl::string_view key,
                                               absl::string_view what);
absl::StatusOr<std::optional<double>> JsonNumber(const Json& obj, absl::string_view key,
                                                 absl::string_view what);
absl::StatusOr<std::optional<bool>> JsonBool(const Json& obj, absl::string_view key,
                                             absl::string_view what);
absl::StatusOr<std::optional<std::string>> JsonString(const Json& obj, absl::string_view key,
                                                      absl::string_view what);

// `value` as an integer in [min_value, 2^53], or InvalidArgument naming `what` when it is not a
// number, not whole, or out of that range.
absl::StatusOr<int64_t> JsonToInt(const Json& value, int64_t min_value, absl::string_view what);

}  // namespace moe

#endif  // MOE_COMMON_CHECKPOINT_JSON_H_
