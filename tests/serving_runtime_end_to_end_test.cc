// The serving runtime of the real binaries: a taken port is a start-up error naming the address,
// SIGTERM drains and exits (within --drain_s + 1 s even while shards hang), bad admission
// flags are refused at start, and the servers raise their open file limit.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/v1/router.grpc.pb.h"
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

// True once bytes wait unread in a TCP socket bound to local `port` of process `pid`'s network
// namespace (/proc/PID/net/tcp and tcp6: gRPC binds dual-stack sockets): a stopped server has
// been sent a request.
bool RequestWaitsAt(pid_t pid, int port) {
  for (const char* table : {"tcp", "tcp6"}) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/net/" + table);
    std::string line;
    std::getline(in, line);  // header
    for (int i = 0; i < 100000 && std::getline(in, line); ++i) {
      std::vector<std::string> fields =
          absl::StrSplit(absl::StripAsciiWhitespace(line), ' ', absl::SkipEmpty());
      if (fields.size() < 5) continue;
      const std::vector<std::string> local = absl::StrSplit(fields[1], ':');
      const std::vector<std::string> queues = absl::StrSplit(fields[4], ':');
      int local_port = 0;
      uint64_t rx_queue = 0;
      if (local.size() == 2 && queues.size() == 2 && absl::SimpleHexAtoi(local[1], &local_port) &&
          local_port == port && absl::SimpleHexAtoi(queues[1], &rx_queue) && rx_queue > 0) {
        return true;
      }
    }
  }
  return false;
}

TEST(ServingRuntimeEndToEndTest, SigtermWithHungShardsExitsWithinDrainPlusOneSecond) {
  testing::Cluster cluster(TinyModel(), 0, {"0-3", "4-7"}, {"--drain_s=1"});
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(testing::StopAndAwaitStopped(cluster.expert(i).process->pid()));
  }
  // A Forward that can only wait: every shard is stopped.
  const std::vector<float> values = testing::RandomTokens(2, 256, 1);
  const v1::ForwardRequest request = testing::MakeRequest(values, 2, 256);
  v1::ForwardResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  grpc::Status status;
  absl::Notification done;
  cluster.router().async()->Forward(&context, &request, &response, [&](grpc::Status s) {
    status = std::move(s);
    done.Notify();
  });
  // The router is in the handler once its shard call sits unread at a stopped shard.
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  bool waiting = false;
  while (!waiting && absl::Now() < give_up) {
    for (int i = 0; i < 2 && !waiting; ++i) {
      waiting = RequestWaitsAt(cluster.expert(i).process->pid(), cluster.expert(i).port);
    }
    if (!waiting) absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_TRUE(waiting) << "the shard call never reached a shard";

  testing::Subprocess& router = *cluster.router_server().process;
  const absl::Time signalled = absl::Now();
  kill(router.pid(), SIGTERM);
  const int exit_status = WaitForExit(router, absl::Seconds(10));
  const absl::Duration took = absl::Now() - signalled;
  for (int i = 0; i < 2; ++i) kill(cluster.expert(i).process->pid(), SIGCONT);
  ASSERT_NE(exit_status, -1) << "still running 10 s after SIGTERM:\n" << router.Log();
  EXPECT_LT(took, absl::Seconds(2)) << router.Log();
  EXPECT_TRUE(WIFEXITED(exit_status)) << "wait status " << exit_status;
  EXPECT_THAT(router.Log(), HasSubstr("draining"));
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_FALSE(status.ok());
  std::cout << "router exited " << took << " after SIGTERM with a hung shard, exit code "
            << WEXITSTATUS(exit_status) << std::endl;
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

// A client that keeps an idle channel open (a router keeps one to each of its shards) does not
// hold a drain with no call in flight: gRPC's Shutdown waited for the connection to close, so a
// shard's every stop took ~5 s here (a Python client's channel: the whole --drain_s of 5).
TEST(ServingRuntimeEndToEndTest, AnIdleOpenChannelDoesNotHoldTheDrain) {
  testing::Server server =
      testing::MustStart(testing::ExpertBinary(),
                         {"--model=" + TinyModel(), "--layer=0", "--experts=0-3", "--drain_s=20"});
  auto channel = grpc::CreateChannel(server.target(), grpc::InsecureChannelCredentials());
  ASSERT_TRUE(channel->WaitForConnected(absl::ToChronoTime(absl::Now() + absl::Seconds(10))));
  kill(server.process->pid(), SIGTERM);
  const int status = WaitForExit(*server.process, absl::Seconds(3));
  ASSERT_NE(status, -1) << "still draining 3 s after SIGTERM with only an idle channel open:\n"
                        << server.process->Log();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "wait status " << status;
}

// A plaintext server on an address other machines may reach says so at start, and on loopback it
// does not. (The warning never printed: plaintext server credentials were never null.)
TEST(ServingRuntimeEndToEndTest, PlaintextOnAReachableAddressIsWarnedAbout) {
  const std::vector<std::string> args = {"--model=" + TinyModel(), "--layer=0", "--experts=0-3"};
  std::vector<std::string> reachable = args;
  reachable.push_back("--listen=0.0.0.0:0");  // after StartServer's 127.0.0.1:0: it wins
  testing::Server open = testing::MustStart(testing::ExpertBinary(), reachable);
  EXPECT_THAT(open.process->Log(),
              HasSubstr("moe_expert: warning: plaintext on 0.0.0.0:0, which other machines may "
                        "reach"));
  testing::Server loopback = testing::MustStart(testing::ExpertBinary(), args);
  EXPECT_THAT(loopback.process->Log(), ::testing::Not(HasSubstr("warning: plaintext")));
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

// The soft limit on open files in /proc/PID/limits ("Max open files  SOFT  HARD  files").
std::string SoftOpenFileLimit(pid_t pid) {
  std::ifstream limits("/proc/" + std::to_string(pid) + "/limits");
  for (std::string line; std::getline(limits, line);) {
    if (!absl::StartsWith(line, "Max open files")) continue;
    std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    return fields.size() >= 5 ? fields[3] : "";
  }
  return "";
}

// Started with a low soft limit (inherited from this test), both servers raise it to the hard
// limit and say so: every connection is a descriptor (common/rpc/open_file_limit.h).
TEST(ServingRuntimeEndToEndTest, ServersRaiseTheirOpenFileLimitToTheHardOne) {
  rlimit limit{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max <= 256) {
    GTEST_SKIP() << "hard open file limit " << limit.rlim_max << ": nothing to raise to";
  }
  const rlimit saved = limit;
  limit.rlim_cur = 256;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &limit), 0);
  testing::Server expert = testing::MustStart(
      testing::ExpertBinary(), {"--model=" + TinyModel(), "--layer=0", "--experts=0-7"});
  testing::Server router =
      testing::MustStart(testing::RouterBinary(),
                         {"--model=" + TinyModel(), "--layer=0", "--shards=" + expert.target()});
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &saved), 0);

  const std::string hard =
      limit.rlim_max == RLIM_INFINITY ? "unlimited" : std::to_string(limit.rlim_max);
  for (testing::Server* server : {&expert, &router}) {
    EXPECT_EQ(SoftOpenFileLimit(server->process->pid()), hard) << server->process->Log();
    EXPECT_THAT(server->process->Log(), HasSubstr("open file limit raised from 256 to "));
  }
}

}  // namespace
}  // namespace moe
