// LocalShardClient with `across_threads`: a call's groups computed on two threads at once give
// the same answer as in turn (outputs per group, and weighted sums added in group order), and a
// failing or overflowing group ends the call with its error either way.
#include "router_service/local_shard_client.h"

#include <cmath>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "testing/two_threads.h"

namespace moe {
namespace {

constexpr int64_t kD = 4;

// y = (expert + 1) · x + 0.5; expert 9 fails; expert 7 overflows on tokens with x[0] > 100.
absl::Status FakeCompute(int, int expert, ConstMatrixView x, MatrixView y) {
  if (expert == 9) return absl::InternalError("expert 9 failed");
  for (int64_t t = 0; t < x.rows; ++t) {
    for (int64_t i = 0; i < kD; ++i) {
      y.row(t)[i] = expert == 7 && x.row(t)[0] > 100 ? std::numeric_limits<float>::infinity()
                                                     : (expert + 1) * x.row(t)[i] + 0.5f;
    }
  }
  return absl::OkStatus();
}

// Runs every group on one of two threads; counts the calls it took.
struct TwoThreads {
  bool operator()(int, absl::Span<const int>, absl::Span<const int64_t> tokens,
                  absl::FunctionRef<void(size_t)> run) {
    ++calls;
    testing::RunOnTwoThreads(tokens.size(), run);
    return true;
  }
  int calls = 0;
};

struct Answer {
  absl::Status status;
  std::vector<std::vector<float>> groups;
  std::vector<float> sum;
};

// Six tokens; groups of experts 0..5, each over some of them, weighted or not.
Answer Call(LocalShardClient& client, bool weighted, std::vector<int> experts,
            float first_token = 1) {
  std::vector<float> tokens(6 * kD);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = first_token + 0.25f * i;
  const std::vector<int64_t> rows = {0, 1, 2, 3, 4, 5};
  std::vector<ExpertRows> groups;
  for (int e : experts) {
    ExpertRows group{e, {}, {}};
    for (int32_t r = 0; r < 6; ++r) {
      if ((r + e) % 3 == 0 || r == e % 6) {
        group.rows.push_back(r);
        if (weighted) group.weights.push_back(0.1f * (e + 1) + 0.01f * r);
      }
    }
    groups.push_back(group);
  }
  ShardCallInput input{0, {tokens.data(), 6, kD}, rows, groups};
  Answer answer;
  client.Compute(input, absl::InfiniteFuture(), [&](absl::StatusOr<ShardCallOutput> output) {
    answer.status = output.status();
    if (!output.ok()) return;
    for (const ConstMatrixView& g : output->groups)
      answer.groups.emplace_back(g.data, g.data + g.size());
    if (output->sum.data != nullptr) {
      answer.sum.assign(output->sum.data, output->sum.data + output->sum.size());
    }
  });
  return answer;
}

TEST(LocalShardClientTest, GroupsAcrossThreadsAnswerAsGroupsInTurn) {
  TwoThreads runner;
  LocalShardClient in_turn("in-turn", {}, FakeCompute);
  LocalShardClient across("across", {}, FakeCompute, std::ref(runner));
  for (bool weighted : {false, true}) {
    const Answer want = Call(in_turn, weighted, {0, 1, 2, 3, 4, 5});
    const Answer got = Call(across, weighted, {0, 1, 2, 3, 4, 5});
    ASSERT_TRUE(want.status.ok()) << want.status;
    ASSERT_TRUE(got.status.ok()) << got.status;
    EXPECT_EQ(got.groups, want.groups) << "weighted " << weighted;
    EXPECT_EQ(got.sum, want.sum) << "weighted " << weighted;
    EXPECT_EQ(want.groups.size(), weighted ? 0u : 6u);
    EXPECT_EQ(want.sum.size(), weighted ? 6u * kD : 0u);
  }
  EXPECT_EQ(runner.calls, 2);
}

TEST(LocalShardClientTest, AFailingOrOverflowingGroupEndsTheCallEitherWay) {
  TwoThreads runner;
  LocalShardClient in_turn("in-turn", {}, FakeCompute);
  LocalShardClient across("across", {}, FakeCompute, std::ref(runner));
  for (LocalShardClient* client : {&in_turn, &across}) {
    const Answer failed = Call(*client, /*weighted=*/true, {0, 9, 2, 3});
    EXPECT_EQ(failed.status.code(), absl::StatusCode::kInternal) << client->target();
    EXPECT_EQ(failed.status.message(), "expert 9 failed");
    const Answer overflow = Call(*client, /*weighted=*/false, {0, 7, 2, 3}, /*first_token=*/200);
    EXPECT_EQ(overflow.status.code(), absl::StatusCode::kInvalidArgument) << client->target();
    EXPECT_EQ(overflow.status.message(),
              "token 1: the output of expert 7 overflows float32 (the input is finite but too "
              "large)");
  }
}

}  // namespace
}  // namespace moe
