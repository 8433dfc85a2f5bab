// moe_client, the real binary, against a real router and shards: what it reads from --input and
// what it tells its user.
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "testing/cluster.h"
#include "testing/subprocess.h"
#include "testing/test_models.h"

namespace moe {
namespace {

using testing::Cluster;
using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr int64_t kD = 256;  // the tiny preset's d_model

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
}

// A line of `n` float values.
std::string Row(int64_t n) {
  std::string row;
  for (int64_t i = 0; i < n; ++i) row += (i == 0 ? "" : " ") + std::to_string(0.01 * (i % 50));
  return row;
}

class ClientToolTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = new std::string(testing::WriteTestModel("tiny"));
    cluster_ = new Cluster(*model_, 0, {"0-3", "4-7"});
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }

  // Runs moe_client against the cluster's router; returns its exit code, its output in `log`.
  static int RunClient(std::vector<std::string> args, std::string* log) {
    args.insert(args.begin(), "--router=" + cluster_->router_server().target());
    return testing::RunTool("tools/moe_client", args, log);
  }

  static std::string* model_;
  static Cluster* cluster_;
};

std::string* ClientToolTest::model_ = nullptr;
Cluster* ClientToolTest::cluster_ = nullptr;

TEST_F(ClientToolTest, InputSkipsBlankLines) {
  const std::string path = testing::MakeTempDir("input") + "/tokens.txt";
  WriteFile(path, "\n" + Row(kD) + "\n\n" + Row(kD) + "\n");
  std::string log;
  EXPECT_EQ(RunClient({"--input=" + path}, &log), 0) << log;
  EXPECT_THAT(log, HasSubstr("output [2, 256]"));
}

TEST_F(ClientToolTest, ARowOfTheWrongWidthIsNamedByItsLineInTheFile) {
  // Line 1 blank, line 2 a token, line 3 one value short: the error names line 3 (the line an
  // editor shows), not the third token.
  const std::string path = testing::MakeTempDir("input") + "/tokens.txt";
  WriteFile(path, "\n" + Row(kD) + "\n" + Row(kD - 1) + "\n");
  std::string log;
  EXPECT_EQ(RunClient({"--input=" + path}, &log), 2) << log;
  EXPECT_THAT(log, HasSubstr("line 3 of " + path + " has 255 values, expected d_model = 256"));
}

TEST_F(ClientToolTest, RequestJsonFromInputHoldsTheFileTokens) {
  const std::string dir = testing::MakeTempDir("input");
  WriteFile(dir + "/tokens.txt", Row(kD) + "\n" + Row(kD) + "\n");
  std::string log;
  ASSERT_EQ(
      RunClient({"--input=" + dir + "/tokens.txt", "--request_json=" + dir + "/one.json"}, &log), 0)
      << log;
  EXPECT_THAT(log, HasSubstr("wrote 1 request of 2 tokens"));
  const nlohmann::json request = ReadJson(dir + "/one.json");
  EXPECT_EQ(request["tokens"]["shape"], nlohmann::json({"2", "256"})) << request.dump();
  EXPECT_EQ(request["tokens"]["values"].size(), 2u * kD);
}

TEST_F(ClientToolTest, RequestJsonRefusesSeveralRequestsOfOneInputFile) {
  // Several requests exist to vary the tokens; the file has one set. Once the file's tokens went
  // into the first request and --tokens random ones of another size into the rest, and the
  // summary named the first's size for all of them.
  const std::string dir = testing::MakeTempDir("input");
  WriteFile(dir + "/tokens.txt", Row(kD) + "\n");
  std::string log;
  EXPECT_EQ(RunClient({"--input=" + dir + "/tokens.txt", "--request_json=" + dir + "/many.json",
                       "--request_json_count=3"},
                      &log),
            2)
      << log;
  EXPECT_THAT(log, HasSubstr("--request_json_count=3"));
  EXPECT_THAT(log, HasSubstr("with --input write one request"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/many.json"));
}

TEST_F(ClientToolTest, RequestJsonCountWritesThatManyRequestsOfTheTokensAsked) {
  const std::string path = testing::MakeTempDir("json") + "/many.json";
  std::string log;
  ASSERT_EQ(RunClient({"--tokens=3", "--request_json=" + path, "--request_json_count=4"}, &log), 0)
      << log;
  EXPECT_THAT(log, HasSubstr("wrote 4 requests of 3 tokens"));
  const nlohmann::json requests = ReadJson(path);
  ASSERT_TRUE(requests.is_array()) << requests.dump();
  ASSERT_EQ(requests.size(), 4u);
  for (const nlohmann::json& request : requests) {
    EXPECT_EQ(request["tokens"]["shape"], nlohmann::json({"3", "256"}));
    EXPECT_EQ(request["tokens"]["values"].size(), 3u * kD);
  }
  EXPECT_NE(requests[0]["tokens"]["values"], requests[1]["tokens"]["values"]);
}

TEST_F(ClientToolTest, PrintsTheExpertsAPartialAnswerLeftOut) {
  // A cluster of its own, since one of its shards is killed.
  Cluster cluster(*model_, 0, {"0-3", "4-7"}, {"--allow_partial"});
  const std::string router = "--router=" + cluster.router_server().target();
  ASSERT_TRUE(testing::WaitFor(
      [&] { return testing::HealthOf(cluster.router_server().target()) == "SERVING"; },
      absl::Seconds(30)));
  std::string log;
  ASSERT_EQ(testing::RunTool("tools/moe_client", {router, "--tokens=16"}, &log), 0) << log;
  EXPECT_THAT(log, Not(HasSubstr("missing experts")));

  // Experts 4-7 now fail on every replica: the router answers without those 16 tokens chose.
  cluster.expert(1).process->Stop(SIGKILL);
  EXPECT_EQ(testing::RunTool("tools/moe_client", {router, "--tokens=16"}, &log), 0) << log;
  EXPECT_THAT(log, ContainsRegex("\nmissing experts: [4-7](,[4-7])* \\(partial answer: ")) << log;
  EXPECT_EQ(testing::RunTool("tools/moe_client", {router, "--tokens=16", "--repeat=3"}, &log), 0)
      << log;
  EXPECT_THAT(log, ContainsRegex("\nmissing experts: [4-7](,[4-7])* in 3 of 3 calls \\(partial"))
      << log;
}

}  // namespace
}  // namespace moe
