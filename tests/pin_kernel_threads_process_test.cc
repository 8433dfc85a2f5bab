// moe_expert --pin_kernel_threads as a real process: with it (and one kernel thread per CPU it may
// use) its kernel helpers are pinned one per CPU while every other thread keeps every CPU;
// without it, the default, nothing is pinned.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/kernels/cpu_affinity.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/subprocess.h"
#include "testing/test_models.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

// Cpus_allowed_list of every thread of `pid` ("0-1", "1", ...).
std::vector<std::string> ThreadCpuLists(pid_t pid) {
  std::vector<std::string> lists;
  for (const auto& task :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    std::ifstream status(task.path() / "status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("Cpus_allowed_list:", 0) == 0) {
        std::istringstream fields(line.substr(line.find(':') + 1));
        std::string list;
        fields >> list;
        lists.push_back(list);
      }
    }
  }
  return lists;
}

absl::StatusOr<testing::Server> StartShard(const std::vector<std::string>& flags) {
  std::vector<std::string> args = {"--model=" + testing::WriteTestModel("tiny"), "--experts=all"};
  args.insert(args.end(), flags.begin(), flags.end());
  return testing::StartServer(testing::BuildBinary("expert_service/moe_expert"), args);
}

TEST(PinKernelThreadsProcessTest, PinsEachHelperToItsOwnCpuAndNothingElse) {
  const std::vector<int> allowed = AllowedCpus();
  if (allowed.size() < 2) GTEST_SKIP() << "needs two CPUs this process may use";
  auto shard = StartShard({"--pin_kernel_threads"});
  ASSERT_TRUE(shard.ok()) << shard.status();
  std::vector<std::string> pinned, free;
  const std::string all = ThreadCpuLists(getpid()).front();  // this test's main thread
  for (const std::string& list : ThreadCpuLists(shard->process->pid())) {
    (list == all ? free : pinned).push_back(list);
  }
  std::sort(pinned.begin(), pinned.end());
  std::vector<std::string> expected;
  for (size_t i = 1; i < allowed.size(); ++i) expected.push_back(std::to_string(allowed[i]));
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(pinned, expected) << "one helper per CPU but the first (left to the caller)";
  EXPECT_GE(free.size(), 2u) << "main and gRPC threads keep every CPU";
  EXPECT_THAT(shard->process->Log(),
              HasSubstr(allowed.size() == 2 ? "helper pinned to CPU " : "helpers pinned to CPUs "));
}

TEST(PinKernelThreadsProcessTest, ByDefaultNoThreadIsPinned) {
  auto shard = StartShard({});
  ASSERT_TRUE(shard.ok()) << shard.status();
  const std::string all = ThreadCpuLists(getpid()).front();
  for (const std::string& list : ThreadCpuLists(shard->process->pid())) EXPECT_EQ(list, all);
  EXPECT_THAT(shard->process->Log(), HasSubstr("not pinned"));
}

}  // namespace
}  // namespace moe
