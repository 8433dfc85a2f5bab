// What must agree between a router and a shard for the shard's answers to be right for the
// router's model: family, sizes, expert count, and the checkpoint fingerprint
// (common/checkpoint/fingerprint.h). Plain value type.
#ifndef MOE_COMMON_CHECKPOINT_MODEL_IDENTITY_H_
#define MOE_COMMON_CHECKPOINT_MODEL_IDENTITY_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace moe {

struct ModelIdentity {
  std::string family;  // config.json model_type
  int64_t d_model = 0;
  int64_t expert_width = 0;
  int num_experts = 0;
  std::string fingerprint;
};

// OK when `actual` matches `expected`; else FailedPrecondition listing every difference, e.g.
// "d_model 512, expected 256; checkpoint fingerprint fnv1a64:…, expected fnv1a64:…".
absl::Status CheckIdentity(const ModelIdentity& expected, const ModelIdentity& actual);

}  // namespace moe

#endif  // MOE_COMMON_CHECKPOINT_MODEL_IDENTITY_H_
