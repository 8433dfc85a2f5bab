#include "tools/placement/placement.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <queue>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"

namespace moe {
namespace {

struct ShardState {
  double load = 0;
  std::vector<int> experts;
  bool Holds(int e) const { return std::find(experts.begin(), experts.end(), e) != experts.end(); }
};

// Replica counts: one each, then the remaining slots one at a time to the heaviest load/replica.
std::vector<int> Replicate(const std::vector<double>& load, int total_slots, int max_replicas) {
  const int num_experts = static_cast<int>(load.size());
  std::vector<int> replicas(num_experts, 1);
  // (load per replica, -id): the top is the heaviest, lower id first on ties.
  std::priority_queue<std::pair<double, int>> heap;
  for (int e = 0; e < num_experts; ++e) {
    if (max_replicas > 1) heap.push({load[e], -e});
  }
  for (int extra = total_slots - num_experts; extra > 0 && !heap.empty(); --extra) {
    const int e = -heap.top().second;
    heap.pop();
    if (++replicas[e] < max_replicas) heap.push({load[e] / replicas[e], -e});
  }
  return replicas;
}

// The greedy can corner itself: the only free slots are on shards that already hold `e`. With
// equal slots per shard some full shard t lacks `e` and holds an expert y that the free shard f
// lacks (else f would hold all of t's experts plus e: more than a shard's slots), so y moves
// t → f and e takes its place.
bool PlaceBySwap(int e, double share, const std::vector<double>& per_replica,
                 std::vector<ShardState>& shards, int slots) {
  for (ShardState& f : shards) {
    if (static_cast<int>(f.experts.size()) >= slots) continue;
    for (ShardState& t : shards) {
      if (&t == &f || t.Holds(e)) continue;
      for (size_t i = 0; i < t.experts.size(); ++i) {
        const int y = t.experts[i];
        if (f.Holds(y)) continue;
        f.experts.push_back(y);
        f.load += per_replica[y];
        t.load += share - per_replica[y];
        t.experts[i] = e;
        return true;
      }
    }
  }
  return false;
}

}  // namespace

absl::Status CheckLayout(int num_experts, const SlotLayout& layout) {
  if (num_experts < 1) return absl::InvalidArgumentError("no experts to place");
  if (layout.num_shards < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("the number of shards must be at least 1, not ", layout.num_shards));
  }
  if (layout.slots_per_shard < 1) {
    return absl::InvalidArgumentError(absl::StrCat("each shard must hold at least 1 expert, not ",
                                                   layout.slots_per_shard, " slots"));
  }
  if (layout.slots_per_shard > num_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat(layout.slots_per_shard, " slots per shard but only ", num_experts,
                     " experts: a shard holds an expert at most once, so use at most ", num_experts,
                     " slots per shard"));
  }
  const int64_t total = int64_t{layout.num_shards} * layout.slots_per_shard;
  if (total < num_experts) {
    return absl::InvalidArgumentError(absl::StrCat(
        layout.num_shards, " shards x ", layout.slots_per_shard, " slots = ", total,
        " slots cannot hold ", num_experts, " experts: need at least ",
        (num_experts + layout.num_shards - 1) / layout.num_shards, " slots per shard or ",
        (num_experts + layout.slots_per_shard - 1) / layout.slots_per_shard, " shards"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Placement> ContiguousPlacement(int num_experts, const SlotLayout& layout) {
  if (absl::Status s = CheckLayout(num_experts, layout); !s.ok()) return s;
  Placement p;
  p.replicas.assign(num_experts, 1);
  p.shard_experts.resize(layout.num_shards);
  const int base = num_experts / layout.num_shards;
  const int more = num_experts % layout.num_shards;
  int next = 0;
  for (int s = 0; s < layout.num_shards; ++s) {
    for (int i = 0; i < base + (s < more ? 1 : 0); ++i) p.shard_experts[s].push_back(next++);
  }
  return p;
}

absl::StatusOr<Placement> BalancedPlacement(const std::vector<double>& expert_load,
                                            const SlotLayout& layout) {
  const int num_experts = static_cast<int>(expert_load.size());
  if (absl::Status s = CheckLayout(num_experts, layout); !s.ok()) return s;
  for (int e = 0; e < num_experts; ++e) {
    if (!std::isfinite(expert_load[e]) || expert_load[e] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("expert ", e, " has load ", expert_load[e], ": want a finite count >= 0"));
    }
  }
  if (std::accumulate(expert_load.begin(), expert_load.end(), 0.0) <= 0) {
    return absl::FailedPreconditionError(
        "every expert's load is 0: nothing to balance (did the router serve any tokens?)");
  }

  absl::StatusOr<Placement> packed = PackReplicas(
      expert_load,
      Replicate(expert_load, layout.num_shards * layout.slots_per_shard, layout.num_shards),
      layout);
  // The greedy packing can predict worse than the naive layout on a few skewed loads (say 0, 100,
  // 100, 100 over 3 shards of 3 slots); then the naive one is the better answer.
  absl::StatusOr<Placement> naive = ContiguousPlacement(num_experts, layout);
  if (packed.ok() && naive.ok() &&
      MaxOverMean(PredictShardLoads(*naive, expert_load)) <
          MaxOverMean(PredictShardLoads(*packed, expert_load))) {
    return naive;
  }
  return packed;
}

absl::StatusOr<Placement> PackReplicas(const std::vector<double>& expert_load,
                                       const std::vector<int>& replicas, const SlotLayout& layout) {
  const int num_experts = static_cast<int>(expert_load.size());
  if (absl::Status s = CheckLayout(num_experts, layout); !s.ok()) return s;
  if (replicas.size() != expert_load.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(replicas.size(), " replica counts for ", num_experts, " experts"));
  }
  int64_t total = 0;
  for (int e = 0; e < num_experts; ++e) {
    if (replicas[e] < 1 || replicas[e] > layout.num_shards) {
      return absl::InvalidArgumentError(absl::StrCat("expert ", e, " has ", replicas[e],
                                                     " replicas: want 1 to ", layout.num_shards,
                                                     " (one per shard at most)"));
    }
    total += replicas[e];
  }
  if (total > int64_t{layout.num_shards} * layout.slots_per_shard) {
    return absl::InvalidArgumentError(absl::StrCat(
        total, " replicas exceed the ", layout.num_shards * layout.slots_per_shard, " slots"));
  }

  Placement p;
  p.replicas = replicas;
  std::vector<double> per_replica(num_experts);
  std::vector<std::pair<double, int>> order;  // (per-replica load, expert), one per replica
  for (int e = 0; e < num_experts; ++e) {
    per_replica[e] = expert_load[e] / p.replicas[e];
    for (int r = 0; r < p.replicas[e]; ++r) order.push_back({per_replica[e], e});
  }
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });

  std::vector<ShardState> shards(layout.num_shards);
  for (const auto& [share, e] : order) {
    ShardState* best = nullptr;
    for (ShardState& s : shards) {
      if (static_cast<int>(s.experts.size()) >= layout.slots_per_shard || s.Holds(e)) continue;
      if (best == nullptr || std::make_pair(s.load, s.experts.size()) <
                                 std::make_pair(best->load, best->experts.size())) {
        best = &s;
      }
    }
    if (best != nullptr) {
      best->experts.push_back(e);
      best->load += share;
    } else if (!PlaceBySwap(e, share, per_replica, shards, layout.slots_per_shard)) {
      return absl::InternalError(absl::StrCat("cannot place a replica of expert ", e));
    }
  }
  for (ShardState& s : shards) {
    std::sort(s.experts.begin(), s.experts.end());
    p.shard_experts.push_back(std::move(s.experts));
  }
  return p;
}

std::vector<double> PredictShardLoads(const Placement& placement,
                                      const std::vector<double>& expert_load) {
  std::vector<double> loads;
  for (const std::vector<int>& experts : placement.shard_experts) {
    double load = 0;
    for (int e : experts) load += expert_load[e] / placement.replicas[e];
    loads.push_back(load);
  }
  return loads;
}

double MaxOverMean(const std::vector<double>& loads) {
  if (loads.empty()) return 1;
  const double total = std::accumulate(loads.begin(), loads.end(), 0.0);
  if (total <= 0) return 1;
  return *std::max_element(loads.begin(), loads.end()) / (total / loads.size());
}

}  // namespace moe
