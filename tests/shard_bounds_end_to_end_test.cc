// A real moe_expert refuses work out of proportion to a request before computing it: repeated
// rows, more groups than experts held, more rows than --max_tokens_per_call, a gzip request that
// inflates past the message limit, bytes that are no ComputeRequest. Each test checks the status
// and the shard's peak memory (VmHWM) after the refusal.
#include <grpcpp/grpcpp.h>

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/v1/expert.grpc.pb.h"
#include "testing/cluster.h"
#include "testing/raw_call.h"
#include "testing/subprocess.h"
#include "testing/test_models.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kDModel = 256;  // the tiny preset

// Peak resident memory of `pid` in bytes (VmHWM of /proc/PID/status), or -1.
int64_t PeakRss(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  for (int i = 0; i < 200 && std::getline(in, line); ++i) {
    if (line.rfind("VmHWM:", 0) != 0) continue;
    std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    int64_t kb = 0;
    if (fields.size() >= 2 && absl::SimpleAtoi(fields[1], &kb)) return kb << 10;
  }
  return -1;
}

class ShardBoundsTest : public ::testing::Test {
 protected:
  void StartShard(std::vector<std::string> extra = {}) {
    static const std::string* model = new std::string(testing::WriteTestModel("tiny"));
    std::vector<std::string> args = {"--model=" + *model, "--experts=0-3"};
    args.insert(args.end(), extra.begin(), extra.end());
    shard_ = testing::MustStart(testing::ExpertBinary(), args);
    ASSERT_NE(shard_.process, nullptr);
    channel_ = grpc::CreateChannel(shard_.target(), grpc::InsecureChannelCredentials());
    stub_ = v1::Expert::NewStub(channel_);
    // A first small call, so the baseline includes gRPC's and the kernels' working memory.
    v1::ComputeRequest warm = Request(2, {{0, {0, 1}}});
    v1::ComputeResponse reply;
    ASSERT_TRUE(Call(warm, &reply).ok());
    baseline_ = PeakRss(shard_.process->pid());
    ASSERT_GT(baseline_, 0);
  }

  static v1::ComputeRequest Request(int64_t tokens,
                                    const std::vector<std::pair<int, std::vector<int>>>& groups) {
    v1::ComputeRequest request;
    request.mutable_tokens()->add_shape(tokens);
    request.mutable_tokens()->add_shape(kDModel);
    request.mutable_tokens()->mutable_values()->Resize(static_cast<int>(tokens * kDModel), 0.5f);
    for (const auto& [expert, rows] : groups) {
      v1::ExpertGroup* group = request.add_groups();
      group->set_expert(expert);
      group->mutable_rows()->Add(rows.begin(), rows.end());
    }
    return request;
  }

  grpc::Status Call(const v1::ComputeRequest& request, v1::ComputeResponse* reply,
                    bool gzip = false) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    if (gzip) context.set_compression_algorithm(GRPC_COMPRESS_GZIP);
    return stub_->Compute(&context, request, reply);
  }

  int64_t PeakGrowth() const { return PeakRss(shard_.process->pid()) - baseline_; }

  testing::Server shard_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Expert::Stub> stub_;
  int64_t baseline_ = 0;
};

// The example: a 263 kB request repeating row 0 262 144 times once took 1.4 GiB and
// 8-14 s of CPU before it was refused. Now the row count alone refuses it, at once.
TEST_F(ShardBoundsTest, RequestRepeatingARowIsRefusedAtOnceWithoutMemory) {
  StartShard();
  v1::ComputeRequest request = Request(1, {{0, std::vector<int>(262144, 0)}});
  ASSERT_GT(request.ByteSizeLong(), 262144u);
  v1::ComputeResponse reply;
  const absl::Time start = absl::Now();
  grpc::Status status = Call(request, &reply);
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_THAT(status.error_message(),
              HasSubstr("262144 rows in all, more than this shard's limit"));
  EXPECT_LT(took, absl::Seconds(2));
  const int64_t growth = PeakGrowth();
  std::cout << "peak RSS " << (baseline_ >> 10) << " kB before, +" << (growth >> 10)
            << " kB for the refused request, answered in " << took << std::endl;
  EXPECT_LT(growth, int64_t{16} << 20);

  // Within the cap, a repeated row is still refused, naming the group and the row.
  status = Call(Request(3, {{1, {0, 1}}, {0, {2, 1, 2}}}), &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("groups[1].rows[2] = 2 repeats a row"));
  // So is an expert named by two groups.
  status = Call(Request(3, {{1, {0}}, {0, {1}}, {1, {2}}}), &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              HasSubstr("groups[2] names expert 1 again (groups[0] did); at most one group per "
                        "expert"));
}

TEST_F(ShardBoundsTest, MoreRowsThanTheCapOrMoreGroupsThanExpertsAreRefused) {
  StartShard({"--max_tokens_per_call=4"});
  v1::ComputeResponse reply;
  grpc::Status status = Call(Request(2, {{0, {0, 1}}, {1, {1, 0}}, {2, {0}}}), &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              HasSubstr("5 rows in all, more than this shard's limit of 4"));
  status = Call(Request(1, {{0, {0}}, {1, {0}}, {2, {0}}, {3, {0}}, {0, {0}}}), &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("5 expert groups; this shard holds 4 experts"));
  EXPECT_TRUE(Call(Request(2, {{0, {0, 1}}, {1, {1, 0}}}), &reply).ok()) << "4 rows are fine";
}

// 64 MiB of zeros gzip to ~64 kB. gRPC 1.51 would inflate them whole before comparing with the
// shard's limit (derived from the model: 8192 tokens x top-2 rows of 256 floats, ~17 MiB):
// "Received message larger than max (67108886 vs. 17973248)" after +60 MB of peak RSS. The
// servers accept no compression, so the request is refused from its headers.
TEST_F(ShardBoundsTest, GzipRequestIsRefusedBeforeItInflates) {
  StartShard();
  v1::ComputeRequest request;
  constexpr int64_t kTokens = 65536;
  request.mutable_tokens()->add_shape(kTokens);
  request.mutable_tokens()->add_shape(kDModel);
  request.mutable_tokens()->mutable_values()->Resize(static_cast<int>(kTokens * kDModel), 0.0f);
  request.add_groups()->set_expert(0);
  request.mutable_groups(0)->add_rows(0);
  v1::ComputeResponse reply;
  grpc::Status status = Call(request, &reply, /*gzip=*/true);
  request.Clear();
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.error_message(), HasSubstr("gzip"));
  const int64_t growth = PeakGrowth();
  std::cout << "gzip request inflating to 64 MiB: code " << status.error_code() << " \""
            << status.error_message() << "\"; peak RSS " << (baseline_ >> 10) << " kB before, +"
            << (growth >> 10) << " kB" << std::endl;
  EXPECT_LT(growth, int64_t{16} << 20);
  // A small gzip request is refused alike; uncompressed ones are served.
  status = Call(Request(2, {{0, {0, 1}}}), &reply, /*gzip=*/true);
  EXPECT_FALSE(status.ok());
  EXPECT_TRUE(Call(Request(2, {{0, {0, 1}}}), &reply).ok()) << "the shard still serves";
}

// A plain request over the limit is refused by gRPC before it is parsed.
TEST_F(ShardBoundsTest, RequestOverTheDerivedLimitIsResourceExhausted) {
  StartShard();
  v1::ComputeResponse reply;
  const grpc::Status status = Call(Request(20000, {{0, {0}}}), &reply);  // 20 MB of tokens
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("17973248"));
  std::cout << "20 MB request: \"" << status.error_message() << "\"" << std::endl;
}

TEST_F(ShardBoundsTest, UnparseableBytesAreInvalidArgumentSayingSo) {
  StartShard();
  const grpc::Status status = testing::SendRawBytes(channel_.get(), "/moe.v1.Expert/Compute",
                                                    std::string("\xff\xff\xff\xff\xff", 5));
  std::cout << "garbage to Compute: " << status.error_code() << " \"" << status.error_message()
            << "\"" << std::endl;
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("not a valid moe.v1.ComputeRequest"));
}

TEST(RouterParseErrorTest, UnparseableBytesAreInvalidArgumentSayingSo) {
  testing::Cluster cluster(testing::WriteTestModel("tiny"), 0, {"all"});
  auto channel =
      grpc::CreateChannel(cluster.router_server().target(), grpc::InsecureChannelCredentials());
  const grpc::Status status = testing::SendRawBytes(channel.get(), "/moe.v1.Router/Forward",
                                                    std::string("\xff\xff\xff\xff\xff", 5));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("not a valid moe.v1.ForwardRequest"));
}

}  // namespace
}  // namespace moe
