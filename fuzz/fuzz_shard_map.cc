// Fuzzes ShardMap::Parse (the router's --shards). Byte 0 picks the expert count (1-256) and
// whether the model has a shared expert; the rest is the flag's value. An accepted map must
// cover every expert exactly once with a non-empty group of replicas.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz/fuzz_util.h"
#include "router_service/shard_map.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int num_experts = 1 + (data[0] & 0x7f) * 2;
  const bool has_shared = (data[0] & 0x80) != 0;
  const std::string spec(reinterpret_cast<const char*>(data + 1), size - 1);
  auto map = moe::ShardMap::Parse(spec, num_experts, has_shared);
  if (!map.ok()) return 0;
  const int groups = static_cast<int>(map->groups().size());
  for (int e = 0; e < num_experts; ++e) {
    const int g = map->group_of(e);
    moe::fuzz::Check(g >= 0 && g < groups, "expert without a group");
    const auto& ids = map->groups()[g].experts.ids;
    moe::fuzz::Check(std::find(ids.begin(), ids.end(), e) != ids.end(), "group does not hold it");
  }
  for (const auto& group : map->groups()) {
    moe::fuzz::Check(!group.targets.empty(), "group without targets");
    for (const auto& target : group.targets) moe::fuzz::Check(!target.empty(), "empty target");
  }
  moe::fuzz::Check(map->shared_group() < groups && (has_shared || map->shared_group() < 0),
                   "bad shared group");
  return 0;
}
