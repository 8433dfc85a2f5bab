#include "common/routing/routing_config.h"

namespace moe {

absl::string_view ScoringName(Scoring scoring) {
  return scoring == Scoring::kSoftmax ? "softmax" : "sigmoid";
}

}  // namespace moe
