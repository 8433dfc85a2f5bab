// Fuzzes ParseExpertSet. Byte 0 picks the expert count (1-4096 with byte 1) and whether "shared"
// is allowed; the rest is the spec. An accepted set must be sorted, unique and in range, and
// survive FormatExpertSet → ParseExpertSet unchanged.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/routing/expert_set.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const int num_experts = 1 + (((data[0] & 0x0f) << 8 | data[1]) % 4096);
  const bool allow_shared = (data[0] & 0x80) != 0;
  const std::string spec(reinterpret_cast<const char*>(data + 2), size - 2);
  auto set = moe::ParseExpertSet(spec, num_experts, allow_shared);
  if (!set.ok()) return 0;
  moe::fuzz::Check(std::is_sorted(set->ids.begin(), set->ids.end()) &&
                       std::adjacent_find(set->ids.begin(), set->ids.end()) == set->ids.end(),
                   "ids not sorted and unique");
  moe::fuzz::Check(set->ids.empty() || (set->ids.front() >= 0 && set->ids.back() < num_experts),
                   "id out of range");
  moe::fuzz::Check(allow_shared || !set->shared, "shared accepted where not allowed");
  if (set->ids.empty() && !set->shared) return 0;  // nothing to format
  const std::string formatted = moe::FormatExpertSet(*set);
  auto again = moe::ParseExpertSet(formatted, num_experts, allow_shared);
  moe::fuzz::Check(again.ok() && *again == *set,
                   "FormatExpertSet does not round-trip: " + formatted);
  return 0;
}
