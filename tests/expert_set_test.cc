#include "common/routing/expert_set.h"

#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

ExpertSet MustParse(const std::string& spec, int num_experts, bool allow_shared = false) {
  absl::StatusOr<ExpertSet> set = ParseExpertSet(spec, num_experts, allow_shared);
  EXPECT_TRUE(set.ok()) << spec << ": " << set.status();
  return set.ok() ? *set : ExpertSet();
}

// Expects InvalidArgument whose message contains `item`.
void ExpectErrorNaming(const std::string& spec, int num_experts, const std::string& item,
                       bool allow_shared = false) {
  absl::StatusOr<ExpertSet> set = ParseExpertSet(spec, num_experts, allow_shared);
  ASSERT_FALSE(set.ok()) << "\"" << spec << "\" parsed as " << FormatExpertSet(*set);
  EXPECT_EQ(set.status().code(), absl::StatusCode::kInvalidArgument) << spec;
  EXPECT_THAT(std::string(set.status().message()), HasSubstr(item)) << spec;
}

TEST(ExpertSetTest, RangeIncludesBothEnds) {
  const ExpertSet set = MustParse("0-3", 8);
  EXPECT_THAT(set.ids, ElementsAre(0, 1, 2, 3));
  EXPECT_FALSE(set.shared);
}

TEST(ExpertSetTest, CommaListIsParsedAsIndividualIds) {
  EXPECT_THAT(MustParse("0,2,5", 8).ids, ElementsAre(0, 2, 5));
}

TEST(ExpertSetTest, ListIsSortedWhateverTheOrderWritten) {
  EXPECT_THAT(MustParse("5,0,2", 8).ids, ElementsAre(0, 2, 5));
  EXPECT_THAT(MustParse("6,0-2", 8).ids, ElementsAre(0, 1, 2, 6));
}

TEST(ExpertSetTest, AllMeansEveryExpertOfTheLayer) {
  EXPECT_THAT(MustParse("all", 8).ids, ElementsAre(0, 1, 2, 3, 4, 5, 6, 7));
  EXPECT_THAT(MustParse("all", 1).ids, ElementsAre(0));
}

TEST(ExpertSetTest, RangesAndIdsMix) {
  EXPECT_THAT(MustParse("0-2,6", 8).ids, ElementsAre(0, 1, 2, 6));
  EXPECT_THAT(MustParse("1,3-4,7", 8).ids, ElementsAre(1, 3, 4, 7));
}

TEST(ExpertSetTest, SingleIdRangeIsOneExpert) {
  EXPECT_THAT(MustParse("4-4", 8).ids, ElementsAre(4));
  EXPECT_THAT(MustParse("7", 8).ids, ElementsAre(7));
}

TEST(ExpertSetTest, SharedIsAcceptedWhereAllowed) {
  const ExpertSet only = MustParse("shared", 8, /*allow_shared=*/true);
  EXPECT_TRUE(only.shared);
  EXPECT_THAT(only.ids, IsEmpty());

  const ExpertSet mixed = MustParse("0-3,shared", 8, /*allow_shared=*/true);
  EXPECT_TRUE(mixed.shared);
  EXPECT_THAT(mixed.ids, ElementsAre(0, 1, 2, 3));
}

TEST(ExpertSetTest, SharedIsRejectedWhereNotAllowed) {
  ExpectErrorNaming("shared", 8, "shared");
  ExpectErrorNaming("0-3,shared", 8, "shared");
}

TEST(ExpertSetTest, IdAtOrBeyondExpertCountIsRejectedNamingIt) {
  ExpectErrorNaming("8", 8, "8");
  ExpectErrorNaming("0-8", 8, "8");
  ExpectErrorNaming("0,2,12", 8, "12");
}

TEST(ExpertSetTest, ReversedRangeIsRejectedNamingIt) { ExpectErrorNaming("5-2", 8, "5-2"); }

TEST(ExpertSetTest, DuplicateExpertIsRejectedNamingIt) {
  ExpectErrorNaming("1,1", 8, "1");
  ExpectErrorNaming("0-3,2-5", 8, "expert 2");
  ExpectErrorNaming("3,all", 8, "expert 3");
}

TEST(ExpertSetTest, EmptyItemIsRejected) {
  ExpectErrorNaming("0,,2", 8, "empty");
  ExpectErrorNaming("0,2,", 8, "empty");
  ExpectErrorNaming(",0", 8, "empty");
}

TEST(ExpertSetTest, EmptySpecIsRejected) {
  ExpectErrorNaming("", 8, "empty");
  ExpectErrorNaming("  ", 8, "empty");
}

TEST(ExpertSetTest, TextThatIsNotAnIdIsRejectedNamingIt) {
  ExpectErrorNaming("abc", 8, "abc");
  ExpectErrorNaming("0,x", 8, "x");
  ExpectErrorNaming("1.5", 8, "1.5");
  ExpectErrorNaming("0-z", 8, "z");
  ExpectErrorNaming("3-", 8, "3-");
}

TEST(ExpertSetTest, RangeWithMoreThanTwoEndsIsRejected) { ExpectErrorNaming("1-2-3", 8, "1-2-3"); }

TEST(ExpertSetTest, FormatCompressesConsecutiveIdsIntoRanges) {
  EXPECT_EQ(FormatExpertSet(ExpertSet{{0, 1, 2, 3, 6}, false}), "0-3,6");
  EXPECT_EQ(FormatExpertSet(ExpertSet{{0, 2, 5}, false}), "0,2,5");
  EXPECT_EQ(FormatExpertSet(ExpertSet{{4}, true}), "4,shared");
  EXPECT_EQ(FormatExpertSet(ExpertSet{{}, true}), "shared");
  EXPECT_EQ(FormatExpertIds({1, 2, 4, 5, 6, 9}), "1-2,4-6,9");
  EXPECT_EQ(FormatExpertIds({}), "");
}

TEST(ExpertSetTest, FormatThenParseRoundTripsRandomSets) {
  std::mt19937 rng(7);
  constexpr int kExperts = 40;
  for (int trial = 0; trial < 300; ++trial) {
    ExpertSet set;
    for (int e = 0; e < kExperts; ++e) {
      if (rng() % 3 != 0) set.ids.push_back(e);
    }
    set.shared = rng() % 2 == 0;
    if (set.ids.empty() && !set.shared) set.ids.push_back(static_cast<int>(rng() % kExperts));
    const std::string text = FormatExpertSet(set);
    absl::StatusOr<ExpertSet> back = ParseExpertSet(text, kExperts, /*allow_shared=*/true);
    ASSERT_TRUE(back.ok()) << text << ": " << back.status();
    EXPECT_EQ(*back, set) << text;
  }
}

TEST(ExpertSetTest, ParseThenFormatGivesTheCompactForm) {
  EXPECT_EQ(FormatExpertSet(MustParse("6,0,1,2", 8)), "0-2,6");
  EXPECT_EQ(FormatExpertSet(MustParse("all", 4)), "0-3");
  EXPECT_EQ(FormatExpertSet(MustParse("shared,3,2", 8, true)), "2-3,shared");
}

}  // namespace
}  // namespace moe
