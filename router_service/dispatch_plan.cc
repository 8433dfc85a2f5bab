#include "router_service/dispatch_plan.h"

#include <map>

namespace moe {
namespace {

// Builds one shard group's work while tokens are added in ascending order.
struct WorkBuilder {
  ShardWork work;
  std::map<int, int32_t> expert_index;  // expert id → index in work.experts
  int64_t last_token = -1;

  // Adds `token` (ascending) for `expert`; returns its place in the reply.
  OutputSource Add(int32_t work_index, int64_t token, int expert) {
    if (token != last_token) {
      work.tokens.push_back(token);
      last_token = token;
    }
    auto [it, inserted] = expert_index.emplace(expert, static_cast<int32_t>(work.experts.size()));
    if (inserted) work.experts.push_back({expert, {}});
    ExpertRows& rows = work.experts[it->second];
    rows.rows.push_back(static_cast<int32_t>(work.tokens.size() - 1));
    return {work_index, it->second, static_cast<int32_t>(rows.rows.size() - 1)};
  }
};

}  // namespace

DispatchPlan PlanDispatch(const Routing& routing, const ShardMap& shards) {
  const int num_groups = static_cast<int>(shards.groups().size());
  std::vector<int32_t> work_of_group(num_groups, -1);
  std::vector<WorkBuilder> builders;
  auto builder_for = [&](int group) -> std::pair<int32_t, WorkBuilder*> {
    if (work_of_group[group] < 0) {
      work_of_group[group] = static_cast<int32_t>(builders.size());
      builders.emplace_back();
      builders.back().work.group = group;
    }
    return {work_of_group[group], &builders[work_of_group[group]]};
  };

  DispatchPlan plan;
  plan.sources.resize(routing.experts.size());
  const int shared_group = shards.shared_group();
  if (shared_group >= 0) plan.shared_sources.resize(routing.num_tokens);
  for (int64_t t = 0; t < routing.num_tokens; ++t) {
    for (int j = 0; j < routing.top_k; ++j) {
      const int expert = routing.token_experts(t)[j];
      auto [index, builder] = builder_for(shards.group_of(expert));
      plan.sources[t * routing.top_k + j] = builder->Add(index, t, expert);
    }
    if (shared_group >= 0) {
      auto [index, builder] = builder_for(shared_group);
      plan.shared_sources[t] = builder->Add(index, t, kSharedExpertId);
    }
  }
  for (WorkBuilder& builder : builders) plan.work.push_back(std::move(builder.work));
  return plan;
}

}  // namespace moe
