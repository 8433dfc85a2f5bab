// A checkpoint's identity, cheap to compute on every process that serves part of it: a 64-bit
// FNV-1a hash over config.json and, for every tensor in name order, its name, dtype, shape and its
// first and last 64 stored bytes. Two processes agree on it exactly when they load the same model
// (any other config, tensor set, shape or — with overwhelming probability — weights differ), while
// each reads only a few pages per tensor, not the weights of other processes' experts.
#ifndef MOE_COMMON_CHECKPOINT_FINGERPRINT_H_
#define MOE_COMMON_CHECKPOINT_FINGERPRINT_H_

#include <string>

#include "absl/status/statusor.h"
#include "common/checkpoint/checkpoint.h"

namespace moe {

// "fnv1a64:" followed by 16 hex digits. Errors as Checkpoint's (unreadable config or file).
absl::StatusOr<std::string> CheckpointFingerprint(Checkpoint& checkpoint);

}  // namespace moe

#endif  // MOE_COMMON_CHECKPOINT_FINGERPRINT_H_
