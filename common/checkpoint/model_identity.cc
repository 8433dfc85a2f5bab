#include "common/checkpoint/model_identity.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace moe {

absl::Status CheckIdentity(const ModelIdentity& expected, const ModelIdentity& actual) {
  std::vector<std::string> differences;
  if (actual.family != expected.family) {
    differences.push_back(absl::StrCat("family ", actual.family, ", expected ", expected.family));
  }
  if (actual.d_model != expected.d_model) {
    differences.push_back(
        absl::StrCat("d_model ", actual.d_model, ", expected ", expected.d_model));
  }
  if (actual.expert_width != expected.expert_width) {
    differences.push_back(
        absl::StrCat("expert width ", actual.expert_width, ", expected ", expected.expert_width));
  }
  if (actual.num_experts != expected.num_experts) {
    differences.push_back(
        absl::StrCat(actual.num_experts, " experts per layer, expected ", expected.num_experts));
  }
  if (actual.fingerprint != expected.fingerprint) {
    differences.push_back(absl::StrCat("checkpoint fingerprint ", actual.fingerprint, ", expected ",
                                       expected.fingerprint,
                                       " (another checkpoint or other weights)"));
  }
  if (differences.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("serves another model: ", absl::StrJoin(differences, "; ")));
}

}  // namespace moe
