// moe_expert --kernel_affinity as a real process: by default (auto, one kernel thread per CPU it
// may use) its kernel helpers are pinned one per CPU, every other thread keeps every CPU; none
// pins nothing; an unknown value stops it at start-up naming the choices.
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
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

absl::StatusOr<testing::Server> StartShard(const std::string& affinity) {
  const std::string model = testing::WriteTestModel("tiny");
  return testing::StartServer(
      testing::BuildBinary("expert_service/moe_expert"),
      {"--model=" + model, "--experts=all", "--kernel_affinity=" + affinity});
}

TEST(KernelAffinityProcessTest, AutoPinsEachHelperToItsOwnCpuAndNothingElse) {
  const std::vector<int> allowed = AllowedCpus();
  if (allowed.size() < 2) GTEST_SKIP() << "needs two CPUs this process may use";
  auto shard = StartShard("auto");
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

TEST(KernelAffinityProcessTest, NonePinsNoThread) {
  auto shard = StartShard("none");
  ASSERT_TRUE(shard.ok()) << shard.status();
  const std::string all = ThreadCpuLists(getpid()).front();
  for (const std::string& list : ThreadCpuLists(shard->process->pid())) EXPECT_EQ(list, all);
  EXPECT_THAT(shard->process->Log(), HasSubstr("not pinned"));
}

TEST(KernelAffinityProcessTest, AnUnknownValueStopsTheShardNamingTheChoices) {
  auto shard = StartShard("0-1");
  ASSERT_FALSE(shard.ok()) << "moe_expert started with --kernel_affinity=0-1";
  EXPECT_THAT(std::string(shard.status().message()),
              HasSubstr("--kernel_affinity: kernel thread affinity \"0-1\" is not one of auto, "
                        "none"));
}

}  // namespace
}  // namespace moe
