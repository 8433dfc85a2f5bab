#include "router_service/replica_map.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/routing/expert_set.h"

namespace moe {

int ReplicaMap::LayerIndex(int layer) const {
  auto it = std::lower_bound(layers.begin(), layers.end(), layer);
  return it != layers.end() && *it == layer ? static_cast<int>(it - layers.begin()) : -1;
}

std::string ReplicaMap::Gaps() const {
  std::string gaps;
  for (size_t i = 0; i < layers.size(); ++i) {
    std::vector<int> missing;
    for (int e = 0; e < num_experts; ++e) {
      if (holders[i][e].empty()) missing.push_back(e);
    }
    const bool shared_missing = shared_on_shards && shared_holders[i].empty();
    if (missing.empty() && !shared_missing) continue;
    absl::StrAppend(
        &gaps, gaps.empty() ? "" : "; ", "layer ", layers[i], ": ",
        missing.empty()
            ? ""
            : absl::StrCat(missing.size() == 1 ? "expert " : "experts ", FormatExpertIds(missing)),
        shared_missing ? (missing.empty() ? "the shared expert" : " and the shared expert") : "");
  }
  return gaps;
}

std::vector<int> ChooseReplicas(const ReplicaMap& map, int layer_index,
                                absl::Span<const ChosenExpert> experts, uint32_t rotation) {
  const int num_replicas = static_cast<int>(map.replicas.size());
  std::vector<int64_t> load(num_replicas, -1);  // work in flight + given here; read lazily
  std::vector<int> ejected(num_replicas, -1);   // read lazily: 1 ejected, 0 not
  std::vector<bool> used(num_replicas, false);
  // The holders each expert may go to: the non-ejected ones, or all when every one is ejected.
  std::vector<std::vector<int>> candidates(experts.size());
  for (size_t i = 0; i < experts.size(); ++i) {
    const int expert = experts[i].expert;
    const std::vector<int>& holders = expert == kSharedExpertId ? map.shared_holders[layer_index]
                                                                : map.holders[layer_index][expert];
    for (int r : holders) {
      if (ejected[r] < 0) ejected[r] = map.replicas[r]->Ejected() ? 1 : 0;
      if (ejected[r] == 0) candidates[i].push_back(r);
    }
    if (candidates[i].empty()) candidates[i] = holders;
  }
  // Experts with one candidate first (they have no choice), then the costliest first.
  std::vector<size_t> order(experts.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const bool pinned_a = candidates[a].size() == 1, pinned_b = candidates[b].size() == 1;
    if (pinned_a != pinned_b) return pinned_a;
    return experts[a].rows > experts[b].rows;
  });
  std::vector<int> chosen(experts.size(), -1);
  for (size_t i : order) {
    const std::vector<int>& holders = candidates[i];
    int best = -1;
    for (size_t k = 0; k < holders.size(); ++k) {
      const int r = holders[(k + rotation) % holders.size()];
      if (load[r] < 0) load[r] = map.replicas[r]->outstanding_work();
      if (best < 0 || load[r] < load[best] || (load[r] == load[best] && used[r] && !used[best])) {
        best = r;
      }
    }
    if (best < 0) continue;
    load[best] += ExpertCallCost(experts[i].rows);
    used[best] = true;
    chosen[i] = best;
  }
  return chosen;
}

absl::Status NoHolderError(const ReplicaMap& map, int layer_index, std::vector<int> experts) {
  const bool shared = std::find(experts.begin(), experts.end(), kSharedExpertId) != experts.end();
  experts.erase(std::remove(experts.begin(), experts.end(), kSharedExpertId), experts.end());
  return absl::UnavailableError(absl::StrCat(
      "no reachable shard serving this model holds ",
      experts.empty()
          ? ""
          : absl::StrCat(experts.size() == 1 ? "expert " : "experts ", FormatExpertIds(experts)),
      shared ? (experts.empty() ? "the shared expert" : " or the shared expert") : "", " of layer ",
      map.layers[layer_index]));
}

}  // namespace moe
