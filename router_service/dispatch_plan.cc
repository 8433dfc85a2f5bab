#include "router_service/dispatch_plan.h"

#include <algorithm>
#include <map>

#include "common/routing/expert_set.h"

namespace moe {
namespace {

// Builds one shard group's work while tokens are added in ascending order.
struct WorkBuilder {
  ShardWork work;
  std::map<int, int32_t> expert_index;  // expert id → index in work.experts
  int64_t last_token = -1;

  // Adds `token` (ascending) for `expert`, with `weight` in a weighted plan; returns its place
  // in the reply.
  OutputSource Add(int32_t work_index, int64_t token, int expert, bool weighted, float weight) {
    if (token != last_token) {
      work.tokens.push_back(token);
      last_token = token;
    }
    auto [it, inserted] = expert_index.emplace(expert, static_cast<int32_t>(work.experts.size()));
    if (inserted) work.experts.push_back({expert, {}, {}});
    ExpertRows& rows = work.experts[it->second];
    rows.rows.push_back(static_cast<int32_t>(work.tokens.size() - 1));
    if (weighted) rows.weights.push_back(weight);
    return {work_index, it->second, static_cast<int32_t>(rows.rows.size() - 1)};
  }
};

DispatchPlan Plan(const Routing& routing, absl::FunctionRef<int(int)> shard_of_expert,
                  int shared_shard, bool weighted,
                  absl::FunctionRef<float(int64_t)> shared_weight) {
  std::map<int, int32_t> work_of_shard;
  std::vector<WorkBuilder> builders;
  auto builder_for = [&](int shard) -> std::pair<int32_t, WorkBuilder*> {
    auto [it, inserted] = work_of_shard.emplace(shard, static_cast<int32_t>(builders.size()));
    if (inserted) {
      builders.emplace_back();
      builders.back().work.shard = shard;
    }
    return {it->second, &builders[it->second]};
  };

  DispatchPlan plan;
  plan.weighted = weighted;
  if (!weighted) {
    plan.sources.resize(routing.experts.size());
    if (shared_shard >= 0) plan.shared_sources.resize(routing.num_tokens);
  }
  for (int64_t t = 0; t < routing.num_tokens; ++t) {
    for (int j = 0; j < routing.top_k; ++j) {
      const int64_t choice = t * routing.top_k + j;
      const int expert = routing.experts[choice];
      auto [index, builder] = builder_for(shard_of_expert(expert));
      const OutputSource source =
          builder->Add(index, t, expert, weighted, weighted ? routing.weights[choice] : 0.0f);
      if (!weighted) plan.sources[choice] = source;
    }
    if (shared_shard >= 0) {
      auto [index, builder] = builder_for(shared_shard);
      const OutputSource source =
          builder->Add(index, t, kSharedExpertId, weighted, weighted ? shared_weight(t) : 0.0f);
      if (!weighted) plan.shared_sources[t] = source;
    }
  }
  for (WorkBuilder& builder : builders) plan.work.push_back(std::move(builder.work));
  return plan;
}

}  // namespace

int64_t WorkCost(const ShardWork& work) {
  int64_t cost = 0;
  for (const ExpertRows& expert : work.experts) {
    cost += ExpertCallCost(static_cast<int64_t>(expert.rows.size()));
  }
  return cost;
}

std::vector<ChosenExpert> ChosenExperts(const Routing& routing) {
  std::vector<int> ids(routing.experts);
  std::sort(ids.begin(), ids.end());
  std::vector<ChosenExpert> experts;
  for (int id : ids) {
    if (experts.empty() || experts.back().expert != id) experts.push_back({id, 0});
    ++experts.back().rows;
  }
  return experts;
}

DispatchPlan PlanDispatch(const Routing& routing, absl::FunctionRef<int(int)> shard_of_expert,
                          int shared_shard) {
  return Plan(routing, shard_of_expert, shared_shard, /*weighted=*/false,
              [](int64_t) { return 0.0f; });
}

DispatchPlan PlanWeightedDispatch(const Routing& routing,
                                  absl::FunctionRef<int(int)> shard_of_expert, int shared_shard,
                                  absl::FunctionRef<float(int64_t)> shared_weight) {
  return Plan(routing, shard_of_expert, shared_shard, /*weighted=*/true, shared_weight);
}

}  // namespace moe
