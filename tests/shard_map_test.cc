#include "router_service/shard_map.h"

#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

ShardMap MustParse(const std::string& spec, int num_experts, bool has_shared_expert = false) {
  absl::StatusOr<ShardMap> map = ShardMap::Parse(spec, num_experts, has_shared_expert);
  EXPECT_TRUE(map.ok()) << spec << ": " << map.status();
  return map.ok() ? *map : ShardMap();
}

// Expects InvalidArgument whose message contains every one of `parts`.
void ExpectError(const std::string& spec, int num_experts, bool has_shared_expert,
                 std::initializer_list<std::string> parts) {
  absl::StatusOr<ShardMap> map = ShardMap::Parse(spec, num_experts, has_shared_expert);
  ASSERT_FALSE(map.ok()) << "\"" << spec << "\" parsed unexpectedly";
  EXPECT_EQ(map.status().code(), absl::StatusCode::kInvalidArgument);
  for (const std::string& part : parts) {
    EXPECT_THAT(std::string(map.status().message()), HasSubstr(part)) << spec;
  }
}

TEST(ShardMapTest, TwoRangesMapEachExpertToItsGroup) {
  const ShardMap map = MustParse("0-3@a:1,4-7@b:2", 8);
  ASSERT_EQ(map.groups().size(), 2u);
  EXPECT_THAT(map.groups()[0].experts.ids, ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(map.groups()[0].targets, ElementsAre("a:1"));
  EXPECT_THAT(map.groups()[1].experts.ids, ElementsAre(4, 5, 6, 7));
  EXPECT_THAT(map.groups()[1].targets, ElementsAre("b:2"));
  for (int e = 0; e < 4; ++e) EXPECT_EQ(map.group_of(e), 0) << e;
  for (int e = 4; e < 8; ++e) EXPECT_EQ(map.group_of(e), 1) << e;
  EXPECT_EQ(map.shared_group(), -1);
}

TEST(ShardMapTest, CommasInsideASpecBelongToTheEntryThatEndsWithTheTarget) {
  const ShardMap map = MustParse("0,2,5@a:1,1,3,4,6,7@b:2", 8);
  ASSERT_EQ(map.groups().size(), 2u);
  EXPECT_THAT(map.groups()[0].experts.ids, ElementsAre(0, 2, 5));
  EXPECT_THAT(map.groups()[0].targets, ElementsAre("a:1"));
  EXPECT_THAT(map.groups()[1].experts.ids, ElementsAre(1, 3, 4, 6, 7));
  EXPECT_THAT(map.groups()[1].targets, ElementsAre("b:2"));
  EXPECT_EQ(map.group_of(0), 0);
  EXPECT_EQ(map.group_of(1), 1);
  EXPECT_EQ(map.group_of(5), 0);
  EXPECT_EQ(map.group_of(7), 1);
}

TEST(ShardMapTest, AllOnOneTargetIsOneGroup) {
  const ShardMap map = MustParse("all@dns:///expert-0:50061", 4);
  ASSERT_EQ(map.groups().size(), 1u);
  EXPECT_THAT(map.groups()[0].targets, ElementsAre("dns:///expert-0:50061"));
  for (int e = 0; e < 4; ++e) EXPECT_EQ(map.group_of(e), 0);
}

TEST(ShardMapTest, SameSetListedTwiceFormsOneGroupWithTwoReplicasInOrder) {
  const ShardMap map = MustParse("0-3@a:1,4-7@b:2,0-3@c:3", 8);
  ASSERT_EQ(map.groups().size(), 2u);
  EXPECT_THAT(map.groups()[0].targets, ElementsAre("a:1", "c:3"));
  EXPECT_THAT(map.groups()[1].targets, ElementsAre("b:2"));
  EXPECT_EQ(map.group_of(2), 0);
}

TEST(ShardMapTest, SameSetSpelledDifferentlyIsStillOneGroupOfReplicas) {
  const ShardMap map = MustParse("0-3@a:1,0,1,2,3@c:3,4-7@b:2", 8);
  ASSERT_EQ(map.groups().size(), 2u);
  EXPECT_THAT(map.groups()[0].targets, ElementsAre("a:1", "c:3"));
  EXPECT_EQ(map.group_of(5), 1);
}

TEST(ShardMapTest, OverlappingDifferentSetsAreRejectedNamingTheExpert) {
  ExpectError("0-3@a:1,3-7@b:2", 8, false, {"expert 3", "3-7"});
  ExpectError("0-7@a:1,4-7@b:2", 8, false, {"4-7"});
}

TEST(ShardMapTest, UncoveredExpertsAreRejectedNamingThem) {
  ExpectError("0-4@a:1", 8, false, {"5-7"});
  ExpectError("0,1@a:1,3@b:2", 6, false, {"2,4-5"});
}

TEST(ShardMapTest, EntryWithoutTargetIsRejected) {
  ExpectError("0-3@a:1,4-7", 8, false, {"4-7", "@TARGET"});
  ExpectError("0-7", 8, false, {"0-7", "@TARGET"});
}

TEST(ShardMapTest, EmptyTargetIsRejected) {
  ExpectError("0-3@,4-7@b:2", 8, false, {"0-3", "empty target"});
  ExpectError("0-3@a:1,4-7@ ", 8, false, {"4-7", "empty target"});
}

TEST(ShardMapTest, EmptySpecIsRejected) { ExpectError("", 8, false, {"--shards"}); }

TEST(ShardMapTest, BadExpertSetIsRejectedNamingTheEntry) {
  ExpectError("0-3@a:1,4-9@b:2", 8, false, {"4-9@b:2", "9"});
  ExpectError("x@a:1", 8, false, {"x@a:1"});
}

TEST(ShardMapTest, SharedEntryPlacesTheSharedExpertWhenTheModelHasOne) {
  const ShardMap map = MustParse("0-7@a:1,shared@c:3", 8, /*has_shared_expert=*/true);
  ASSERT_EQ(map.groups().size(), 2u);
  EXPECT_EQ(map.shared_group(), 1);
  EXPECT_TRUE(map.groups()[1].experts.shared);
  EXPECT_THAT(map.groups()[1].experts.ids, IsEmpty());
  EXPECT_THAT(map.groups()[1].targets, ElementsAre("c:3"));
  EXPECT_FALSE(map.groups()[0].experts.shared);
}

TEST(ShardMapTest, SharedTogetherWithRoutedExpertsOnOneShard) {
  const ShardMap map = MustParse("0-3,shared@a:1,4-7@b:2", 8, /*has_shared_expert=*/true);
  ASSERT_EQ(map.groups().size(), 2u);
  EXPECT_EQ(map.shared_group(), 0);
  EXPECT_THAT(map.groups()[0].experts.ids, ElementsAre(0, 1, 2, 3));
}

TEST(ShardMapTest, SharedListedTwiceFormsReplicas) {
  const ShardMap map = MustParse("0-7@a:1,shared@c:3,shared@d:4", 8, /*has_shared_expert=*/true);
  ASSERT_EQ(map.groups().size(), 2u);
  EXPECT_EQ(map.shared_group(), 1);
  EXPECT_THAT(map.groups()[1].targets, ElementsAre("c:3", "d:4"));
}

TEST(ShardMapTest, SharedInTwoDifferentSetsIsRejected) {
  ExpectError("0-3,shared@a:1,4-7,shared@b:2", 8, true, {"shared"});
}

TEST(ShardMapTest, SharedEntryIsRejectedWhenTheModelHasNoSharedExpert) {
  ExpectError("0-7@a:1,shared@c:3", 8, /*has_shared_expert=*/false, {"shared", "c:3"});
}

TEST(ShardMapTest, WithoutSharedEntryTheRouterComputesTheSharedExpert) {
  const ShardMap map = MustParse("0-7@a:1", 8, /*has_shared_expert=*/true);
  EXPECT_EQ(map.shared_group(), -1);
}

}  // namespace
}  // namespace moe
