// ChooseReplicas: which holder computes each chosen expert of a request, and the cost it balances.
// It balances the cost of the work (ExpertCallCost: at least one read of an expert's weights), not
// its rows, across the holders, counting the work already in flight on each.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "router_service/replica_map.h"
#include "tests/idle_shard_client.h"

namespace moe {
namespace {

// One layer of `num_experts`; replica r holds the experts listed in holds[r].
ReplicaMap MakeMap(int num_experts, const std::vector<std::vector<int>>& holds) {
  ReplicaMap map;
  map.layers = {0};
  map.num_experts = num_experts;
  map.holders.assign(1, std::vector<std::vector<int>>(num_experts));
  map.shared_holders.assign(1, {});
  ReplicaPolicy policy;
  policy.eject_after = 1;
  for (size_t r = 0; r < holds.size(); ++r) {
    map.replicas.push_back(std::make_shared<Replica>(
        std::make_unique<IdleShardClient>("r" + std::to_string(r)), policy));
    for (int e : holds[r]) map.holders[0][e].push_back(static_cast<int>(r));
  }
  return map;
}

std::vector<ChosenExpert> OneRowEach(const std::vector<int>& experts) {
  std::vector<ChosenExpert> chosen;
  for (int e : experts) chosen.push_back({e, 1});
  return chosen;
}

// The cost each replica gets from `chosen` (ExpertCallCost of each expert it computes).
std::vector<int64_t> CostPerReplica(const ReplicaMap& map, const std::vector<ChosenExpert>& experts,
                                    const std::vector<int>& chosen) {
  std::vector<int64_t> cost(map.replicas.size(), 0);
  for (size_t i = 0; i < experts.size(); ++i) {
    EXPECT_GE(chosen[i], 0) << "expert " << experts[i].expert << " got no replica";
    if (chosen[i] >= 0) cost[chosen[i]] += ExpertCallCost(experts[i].rows);
  }
  return cost;
}

const std::vector<int> kAll = {0, 1, 2, 3, 4, 5, 6, 7};

TEST(ExpertCostTest, ChosenExpertsCountTheirRows) {
  Routing routing;
  routing.num_tokens = 3;
  routing.top_k = 2;
  routing.experts = {5, 1, 1, 7, 5, 1};
  routing.weights.assign(6, 0.5f);
  const std::vector<ChosenExpert> chosen = ChosenExperts(routing);
  ASSERT_EQ(chosen.size(), 3u);
  EXPECT_EQ(chosen[0].expert, 1);
  EXPECT_EQ(chosen[0].rows, 3);
  EXPECT_EQ(chosen[1].expert, 5);
  EXPECT_EQ(chosen[1].rows, 2);
  EXPECT_EQ(chosen[2].expert, 7);
  EXPECT_EQ(chosen[2].rows, 1);
}

TEST(ExpertCostTest, AnExpertCostsAtLeastOneReadOfItsWeights) {
  EXPECT_EQ(ExpertCallCost(1), kRowsPerWeightRead);
  EXPECT_EQ(ExpertCallCost(kRowsPerWeightRead), kRowsPerWeightRead);
  EXPECT_EQ(ExpertCallCost(100), 100);
  ShardWork work{0, {0, 1, 2}, {{3, {0}, {}}, {4, std::vector<int32_t>(40, 1), {}}}};
  EXPECT_EQ(WorkCost(work), kRowsPerWeightRead + 40);
}

TEST(ReplicaChoiceTest, OneTokensExpertsSplitEvenlyOverFullReplicas) {
  // Top-8 at one token over two replicas of every expert: each reads four experts' weights,
  // whatever the rotation (a request's rows then travel to both, which costs far less than one
  // replica streaming all eight while the other idles).
  const ReplicaMap map = MakeMap(8, {kAll, kAll});
  const std::vector<ChosenExpert> experts = OneRowEach(kAll);
  for (uint32_t rotation = 0; rotation < 4; ++rotation) {
    const std::vector<int> chosen = ChooseReplicas(map, 0, experts, rotation);
    EXPECT_EQ(CostPerReplica(map, experts, chosen),
              std::vector<int64_t>({4 * kRowsPerWeightRead, 4 * kRowsPerWeightRead}))
        << "rotation " << rotation;
  }
}

TEST(ReplicaChoiceTest, CostNotRowsIsBalanced) {
  // Expert 0 computes 64 rows (compute bound: costs 64), experts 1-4 one row each (each costs a
  // weight read, 16). Balancing rows would put all of 1-4 beside nothing; balancing cost puts
  // expert 0 alone and 1-4 (64) on the other replica.
  const ReplicaMap map = MakeMap(8, {kAll, kAll});
  const std::vector<ChosenExpert> experts = {{0, 64}, {1, 1}, {2, 1}, {3, 1}, {4, 1}};
  const std::vector<int> chosen = ChooseReplicas(map, 0, experts, 0);
  std::vector<int64_t> cost = CostPerReplica(map, experts, chosen);
  std::sort(cost.begin(), cost.end());
  EXPECT_EQ(cost, std::vector<int64_t>({64, 4 * kRowsPerWeightRead}));
  for (size_t i = 1; i < experts.size(); ++i) EXPECT_NE(chosen[i], chosen[0]) << i;
}

TEST(ReplicaChoiceTest, ExpertsWithOneHolderAreCountedBeforeTheOthersAreSpread) {
  // Experts 0-2 live only on replica 0; 3-5 on both. Replica 0 already has three weight reads,
  // so the three shared experts go to replica 1, in every rotation.
  const ReplicaMap map = MakeMap(6, {{0, 1, 2, 3, 4, 5}, {3, 4, 5}});
  const std::vector<ChosenExpert> experts = OneRowEach({0, 1, 2, 3, 4, 5});
  for (uint32_t rotation = 0; rotation < 3; ++rotation) {
    EXPECT_EQ(ChooseReplicas(map, 0, experts, rotation), std::vector<int>({0, 0, 0, 1, 1, 1}))
        << "rotation " << rotation;
  }
}

TEST(ReplicaChoiceTest, WorkInFlightOnAReplicaSendsNewWorkToTheOther) {
  const ReplicaMap map = MakeMap(8, {kAll, kAll});
  map.replicas[0]->Started(4 * kRowsPerWeightRead);  // another request's four experts
  const std::vector<ChosenExpert> experts = OneRowEach({0, 1, 2, 3});
  for (uint32_t rotation = 0; rotation < 2; ++rotation) {
    EXPECT_EQ(ChooseReplicas(map, 0, experts, rotation), std::vector<int>({1, 1, 1, 1}));
  }
  map.replicas[0]->Succeeded(4 * kRowsPerWeightRead, absl::Milliseconds(1));
  EXPECT_EQ(map.replicas[0]->outstanding_work(), 0);
}

TEST(ReplicaChoiceTest, OnEqualLoadAReplicaTheRequestAlreadyUsesIsPreferred) {
  // Replica 0 has one weight read in flight; expert 0 lives only on replica 1. After it, both
  // replicas carry the same load, and expert 1 joins replica 1's call rather than opening a
  // second one, whichever replica the rotation would start from.
  const ReplicaMap map = MakeMap(2, {{1}, {0, 1}});
  map.replicas[0]->Started(kRowsPerWeightRead);
  for (uint32_t rotation = 0; rotation < 2; ++rotation) {
    EXPECT_EQ(ChooseReplicas(map, 0, OneRowEach({0, 1}), rotation), std::vector<int>({1, 1}));
  }
}

TEST(ReplicaChoiceTest, EjectedReplicasAreUsedOnlyWhenNoOtherHolderIsLeft) {
  const ReplicaMap map = MakeMap(4, {{0, 1, 2, 3}, {0, 1, 2}});
  map.replicas[0]->Started(1);
  map.replicas[0]->Failed(1);  // eject_after = 1: ejected now
  ASSERT_TRUE(map.replicas[0]->Ejected());
  EXPECT_EQ(ChooseReplicas(map, 0, OneRowEach({0, 1, 2, 3}), 0), std::vector<int>({1, 1, 1, 0}));
}

TEST(ReplicaChoiceTest, AnExpertNobodyHoldsGetsMinusOne) {
  ReplicaMap map = MakeMap(4, {{0, 1}});
  EXPECT_EQ(ChooseReplicas(map, 0, OneRowEach({1, 3}), 0), std::vector<int>({0, -1}));
}

TEST(ReplicaChoiceTest, TheSharedExpertGoesToOneOfItsHolders) {
  ReplicaMap map = MakeMap(2, {{0, 1}, {0, 1}});
  map.shared_on_shards = true;
  map.shared_holders[0] = {1};
  const std::vector<ChosenExpert> experts = {{0, 1}, {1, 1}, {kSharedExpertId, 1}};
  EXPECT_EQ(ChooseReplicas(map, 0, experts, 0)[2], 1);
}

}  // namespace
}  // namespace moe
