// Fuzzes the router's --shards parser (ParseShardTargets, then CheckDeclaredCoverage). Byte 0
// picks the expert count (1-255, odd) and whether the model has a shared expert; the rest is the
// flag's value. Accepted entries must have a target and valid declared sets; a list whose entries
// all declare their experts and that passes the coverage check must cover every expert.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "router_service/shard_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int num_experts = 1 + (data[0] & 0x7f) * 2;
  const bool has_shared = (data[0] & 0x80) != 0;
  const std::string spec(reinterpret_cast<const char*>(data + 1), size - 1);
  auto targets = moe::ParseShardTargets(spec, num_experts, has_shared);
  if (!targets.ok()) return 0;
  bool all_declared = true;
  std::vector<bool> covered(num_experts, false);
  for (const moe::ShardTarget& target : *targets) {
    moe::fuzz::Check(!target.target.empty(), "entry without a target");
    if (!target.declared.has_value()) {
      all_declared = false;
      continue;
    }
    moe::fuzz::Check(has_shared || !target.declared->shared, "shared accepted without one");
    for (int e : target.declared->ids) {
      moe::fuzz::Check(e >= 0 && e < num_experts, "declared expert out of range");
      covered[e] = true;
    }
  }
  if (all_declared && moe::CheckDeclaredCoverage(*targets, num_experts).ok()) {
    for (int e = 0; e < num_experts; ++e) {
      moe::fuzz::Check(covered[e],
                       "coverage check passed with expert " + std::to_string(e) + " uncovered");
    }
  }
  return 0;
}
