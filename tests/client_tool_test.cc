// moe_client, the real binary, against a real router and shards: what it reads from --input and
// what it tells its user.
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/cluster.h"
#include "testing/subprocess.h"
#include "testing/test_models.h"

namespace moe {
namespace {

using testing::Cluster;
using ::testing::HasSubstr;

constexpr int64_t kD = 256;  // the tiny preset's d_model

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  ASSERT_TRUE(out.good()) << path;
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

}  // namespace
}  // namespace moe
