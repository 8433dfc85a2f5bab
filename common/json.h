// Minimal JSON access on top of protobuf's JSON parser (google.protobuf.Struct), so the project
// needs no extra JSON library. Numbers arrive as double: exact for integers below 2^53, which
// covers every offset and dimension a checkpoint can hold.
#ifndef MOE_COMMON_JSON_H_
#define MOE_COMMON_JSON_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/struct.pb.h"

namespace moe {

// Parses `text` as a JSON object. `what` names the source (a file path) in error messages.
absl::StatusOr<google::protobuf::Struct> ParseJsonObject(absl::string_view text,
                                                         absl::string_view what);

// Typed field access. Each returns std::nullopt when the key is absent or JSON null, and an error
// naming `key` and `what` when it is present with the wrong type (or, for integers, a value that
// is not a whole number in range).
absl::StatusOr<std::optional<int64_t>> JsonInt(const google::protobuf::Struct& obj,
                                               absl::string_view key, absl::string_view what);
absl::StatusOr<std::optional<double>> JsonNumber(const google::protobuf::Struct& obj,
                                                 absl::string_view key, absl::string_view what);
absl::StatusOr<std::optional<bool>> JsonBool(const google::protobuf::Struct& obj,
                                             absl::string_view key, absl::string_view what);
absl::StatusOr<std::optional<std::string>> JsonString(const google::protobuf::Struct& obj,
                                                      absl::string_view key,
                                                      absl::string_view what);

// Converts a JSON number to an integer, or fails naming `what` if it is not a whole number in
// [min_value, 2^53].
absl::StatusOr<int64_t> JsonNumberToInt(double value, int64_t min_value, absl::string_view what);

}  // namespace moe

#endif  // MOE_COMMON_JSON_H_
