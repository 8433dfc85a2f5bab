// The serving runtime of the real moe_expert binary: a taken port is a start-up error naming the
// address, SIGTERM drains and exits, and bad admission flags are refused at start.
#include <signal.h>
#include <sys/wait.h>

#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/cluster.h"
#include "testing/subprocess.h"
#include "testing/test_models.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

const std::string& TinyModel() {
  static const std::string* model = new std::string(testing::WriteTestModel("tiny"));
  return *model;
}

std::vector<std::string> ExpertArgv(std::vector<std::string> extra) {
  std::vector<std::string> argv = {testing::ExpertBinary(), "--model=" + TinyModel(), "--layer=0",
                                   "--experts=0-3"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

// Waits up to `timeout` for the process to exit; its wait status, or -1 if it still runs.
int WaitForExit(testing::Subprocess& process, absl::Duration timeout) {
  const absl::Time give_up = absl::Now() + timeout;
  while (process.Running() && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(10));
  return process.Running() ? -1 : process.Stop(SIGKILL);  // reaped already: no signal is sent
}

TEST(ServingRuntimeEndToEndTest, SecondServerOnATakenPortFailsNamingTheAddress) {
  testing::Server first = testing::MustStart(
      testing::ExpertBinary(), {"--model=" + TinyModel(), "--layer=0", "--experts=0-3"});
  ASSERT_GT(first.port, 0);
  const std::string address = first.target();  // 127.0.0.1:PORT
  auto second = testing::Subprocess::Start(ExpertArgv({"--listen=" + address}),
                                           testing::MakeTempDir("second") + "/log");
  ASSERT_TRUE(second.ok()) << second.status();
  const int status = WaitForExit(**second, absl::Seconds(30));
  ASSERT_NE(status, -1) << "the second server kept running on a taken port";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << "wait status " << status;
  EXPECT_THAT((*second)->Log(),
              HasSubstr("moe_expert: cannot listen on " + address + ": Address already in use"));
  EXPECT_TRUE(first.process->Running());
}

TEST(ServingRuntimeEndToEndTest, SigtermDrainsAndExitsCleanly) {
  testing::Server server =
      testing::MustStart(testing::ExpertBinary(),
                         {"--model=" + TinyModel(), "--layer=0", "--experts=0-3", "--drain_s=3"});
  ASSERT_GT(server.port, 0);
  kill(server.process->pid(), SIGTERM);
  // Nothing is in flight, so the drain ends at once rather than after --drain_s.
  const int status = WaitForExit(*server.process, absl::Seconds(3));
  ASSERT_NE(status, -1) << "still running 3 s after SIGTERM:\n" << server.process->Log();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "wait status " << status;
  EXPECT_THAT(server.process->Log(), HasSubstr("draining"));
  EXPECT_THAT(server.process->Log(), HasSubstr("drained in"));
}

TEST(ServingRuntimeEndToEndTest, AdmissionLimitAtTheThreadCapIsAStartupError) {
  auto server = testing::StartServer(testing::ExpertBinary(),
                                     {"--model=" + TinyModel(), "--layer=0", "--experts=0-3",
                                      "--max_threads=16", "--max_inflight=16"});
  ASSERT_FALSE(server.ok()) << "started with no threads left to refuse calls with";
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("--max_inflight / --max_threads"));
}

}  // namespace
}  // namespace moe
