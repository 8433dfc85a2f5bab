#include "router_service/shard_targets.h"

#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<ShardTarget> MustParse(const std::string& spec, int num_experts,
                                   bool has_shared_expert = false) {
  auto targets = ParseShardTargets(spec, num_experts, has_shared_expert);
  EXPECT_TRUE(targets.ok()) << spec << ": " << targets.status();
  return targets.ok() ? *targets : std::vector<ShardTarget>();
}

// Expects InvalidArgument whose message contains every one of `parts`.
void ExpectError(const std::string& spec, int num_experts, bool has_shared_expert,
                 std::initializer_list<std::string> parts) {
  auto targets = ParseShardTargets(spec, num_experts, has_shared_expert);
  ASSERT_FALSE(targets.ok()) << "\"" << spec << "\" parsed unexpectedly";
  EXPECT_EQ(targets.status().code(), absl::StatusCode::kInvalidArgument);
  for (const std::string& part : parts) {
    EXPECT_THAT(std::string(targets.status().message()), HasSubstr(part)) << spec;
  }
}

TEST(ShardTargetsTest, BareTargetsDeclareNothing) {
  const auto targets = MustParse("127.0.0.1:50061, dns:///expert-1:50061", 8);
  ASSERT_EQ(targets.size(), 2u);
  EXPECT_EQ(targets[0].target, "127.0.0.1:50061");
  EXPECT_FALSE(targets[0].declared.has_value());
  EXPECT_EQ(targets[1].target, "dns:///expert-1:50061");
}

TEST(ShardTargetsTest, CommasInsideASpecBelongToTheEntryThatEndsWithTheTarget) {
  const auto targets = MustParse("0,2,5@a:1,1,3,4,6,7@b:2", 8);
  ASSERT_EQ(targets.size(), 2u);
  EXPECT_THAT(targets[0].declared->ids, ElementsAre(0, 2, 5));
  EXPECT_EQ(targets[0].target, "a:1");
  EXPECT_THAT(targets[1].declared->ids, ElementsAre(1, 3, 4, 6, 7));
  EXPECT_EQ(targets[1].target, "b:2");
}

TEST(ShardTargetsTest, DeclaredAndBareEntriesMix) {
  const auto targets = MustParse("0-3@a:1,b:2,all,shared@c:3", 8, /*has_shared_expert=*/true);
  ASSERT_EQ(targets.size(), 3u);
  EXPECT_THAT(targets[0].declared->ids, ElementsAre(0, 1, 2, 3));
  EXPECT_FALSE(targets[1].declared.has_value());
  EXPECT_EQ(targets[2].declared->ids.size(), 8u);
  EXPECT_TRUE(targets[2].declared->shared);
  EXPECT_TRUE(DeclaresSharedExpert(targets));
}

TEST(ShardTargetsTest, OverlappingSetsAndReplicasAreAllowed) {
  const auto targets = MustParse("0-5@a:1,4-7@b:2,0-5@c:3", 8);
  EXPECT_EQ(targets.size(), 3u);
  EXPECT_TRUE(CheckDeclaredCoverage(targets, 8).ok());
}

TEST(ShardTargetsTest, ErrorsNameTheEntry) {
  ExpectError("0-3@a:1,a:1", 8, false, {"a:1", "twice"});
  ExpectError("0-3@a:1,4-7", 8, false, {"4-7", "@TARGET"});
  ExpectError("4-7,b:2", 8, false, {"4-7,b:2", "@TARGET"});
  ExpectError("0-9@a:1", 8, false, {"0-9@a:1", "out of range"});
  ExpectError("shared@a:1", 8, false, {"shared@a:1", "no shared expert"});
  ExpectError("0-3@", 8, false, {"0-3@", "empty"});
  ExpectError(" , ", 8, false, {"empty"});
}

TEST(ShardTargetsTest, DeclaredCoverageNamesUncoveredExperts) {
  const absl::Status status = CheckDeclaredCoverage(MustParse("0-3@a:1,4-5@b:2", 8), 8);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("6-7"));
}

TEST(ShardTargetsTest, CoverageOfBareTargetsIsLearnedAtRunTime) {
  EXPECT_TRUE(CheckDeclaredCoverage(MustParse("0-3@a:1,b:2", 8), 8).ok());
}

}  // namespace
}  // namespace moe
