// Faults of one of two replicas (both hold experts 0-7 of the tiny model) under closed-loop load
// with 2 s deadlines, against the real binaries: a hung replica (SIGSTOP), a dead one (kill -9),
// and a silently partitioned host (iptables DROP in a network namespace). No request may fail;
// throughput recovers; the router's Info says what happened to the replica.
#include <signal.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "testing/cluster.h"
#include "testing/load_loop.h"
#include "testing/netns.h"
#include "tests/fault_common.h"

namespace moe {
namespace {

using fault::PollUntil;
using fault::ShardStatus;

constexpr int kClients = 4;
const absl::Duration kDeadline = absl::Seconds(2);

v1::ForwardRequest Request() {
  return testing::MakeRequest(testing::RandomTokens(4, fault::kTinyD, 7), 4, fault::kTinyD);
}

std::string FailureList(const std::vector<testing::LoadLoop::Call>& failures) {
  std::string out;
  for (size_t i = 0; i < failures.size() && i < 5; ++i) {
    absl::StrAppend(&out, "\n  code ", static_cast<int>(failures[i].code), ": ",
                    failures[i].message);
  }
  return out;
}

class TwoReplicasTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_ = std::make_unique<testing::Cluster>(
        fault::TinyModel(), 0, std::vector<std::string>{"0-7", "0-7"},
        std::vector<std::string>{"--info_shows_topology"});
    ASSERT_GT(cluster_->router_server().port, 0);
    ASSERT_TRUE(PollUntil(
        [&] {
          return ShardStatus(cluster_->router(), cluster_->expert(1).target()).first == "SERVING";
        },
        absl::Seconds(10)));
  }

  // Runs the load for `healthy` (the reference rate), applies `fault`, keeps it for `after`;
  // returns the healthy rate and the time of the fault.
  std::pair<double, absl::Time> LoadAroundFault(testing::LoadLoop& load, absl::Duration healthy,
                                                const std::function<void()>& fault,
                                                absl::Duration after) {
    const absl::Time start = absl::Now();
    // Warm-up and the healthy window: the load's own duration, not a synchronisation.
    absl::SleepFor(absl::Milliseconds(500) + healthy);
    const double healthy_rate = load.OkRate(start + absl::Milliseconds(500), absl::Now());
    const absl::Time fault_at = absl::Now();
    fault();
    absl::SleepFor(after);  // the fault lasts this long under load
    return {healthy_rate, fault_at};
  }

  std::unique_ptr<testing::Cluster> cluster_;
};

TEST_F(TwoReplicasTest, HungReplicaLosesNoRequestAndIsRoutedAroundWithinTwoSeconds) {
  testing::LoadLoop load(cluster_->router_server().target(), Request(), kClients, kDeadline);
  const pid_t hung = cluster_->expert(1).process->pid();
  auto [healthy_rate, stopped_at] = LoadAroundFault(
      load, absl::Seconds(1.5), [&] { kill(hung, SIGSTOP); }, absl::ZeroDuration());
  // Info reports it once the router has given up on it.
  std::string state;
  const bool reported = PollUntil(
      [&] {
        state = ShardStatus(cluster_->router(), cluster_->expert(1).target()).first;
        return state == "EJECTED" || state == "UNREACHABLE";
      },
      absl::Seconds(5));
  const absl::Duration reported_after = absl::Now() - stopped_at;
  // The load runs on through 3.5 s of the fault in all (the fault's duration).
  absl::SleepFor(std::max(absl::ZeroDuration(), stopped_at + absl::Seconds(3.5) - absl::Now()));
  load.Stop();
  kill(hung, SIGCONT);
  const double rate_0_2 = load.OkRate(stopped_at, stopped_at + absl::Seconds(2));
  const double rate_2_3 = load.OkRate(stopped_at + absl::Seconds(2), stopped_at + absl::Seconds(3));
  std::cout << "SIGSTOP of 1 of 2 replicas, " << kClients
            << " clients, 2 s deadlines: " << load.Summary() << "; healthy " << healthy_rate
            << " req/s, 0-2 s after " << rate_0_2 << " req/s, 2-3 s after " << rate_2_3
            << " req/s; Info " << state << " (seen " << reported_after << " after SIGSTOP)"
            << std::endl;
  EXPECT_TRUE(load.Failures().empty()) << load.Summary() << FailureList(load.Failures());
  EXPECT_GE(rate_2_3, 0.5 * healthy_rate);
  EXPECT_TRUE(reported) << "Info still says " << state;
}

TEST_F(TwoReplicasTest, KilledReplicaLosesNoRequest) {
  testing::LoadLoop load(cluster_->router_server().target(), Request(), kClients, kDeadline);
  auto [healthy_rate, killed_at] = LoadAroundFault(
      load, absl::Seconds(1), [&] { cluster_->expert(1).process->Stop(SIGKILL); },
      absl::Seconds(3));
  load.Stop();
  const double rate_after = load.OkRate(killed_at + absl::Seconds(1), killed_at + absl::Seconds(3));
  std::cout << "kill -9 of 1 of 2 replicas: " << load.Summary() << "; healthy " << healthy_rate
            << " req/s, 1-3 s after " << rate_after << " req/s" << std::endl;
  EXPECT_TRUE(load.Failures().empty()) << load.Summary() << FailureList(load.Failures());
  EXPECT_GE(rate_after, 0.5 * healthy_rate);
}

// One replica on loopback, the other inside a network namespace whose packets get dropped.
TEST(PartitionedReplicaTest, PartitionedReplicaLosesNoRequestAndIsDetected) {
  const absl::Status available = testing::NetworkNamespace::Available();
  if (!available.ok()) {
    std::cerr << "*** SKIPPING partition fault test: " << available << std::endl;
    GTEST_SKIP() << "network namespaces unavailable: " << available;
  }
  auto ns = testing::NetworkNamespace::Create();
  ASSERT_TRUE(ns.ok()) << ns.status();
  const std::string model = fault::TinyModel();
  testing::Server local = testing::MustStart(testing::ExpertBinary(),
                                             {"--model=" + model, "--layer=0", "--experts=0-7"});
  const std::string dir = testing::MakeTempDir("partitioned");
  auto remote = testing::Subprocess::Start(
      (*ns)->Command({testing::ExpertBinary(), "--model=" + model, "--layer=0", "--experts=0-7",
                      "--listen=" + (*ns)->inside_address() + ":0",
                      "--port_file=" + dir + "/port"}),
      dir + "/log");
  ASSERT_TRUE(remote.ok()) << remote.status();
  int port = 0;
  ASSERT_TRUE(PollUntil(
      [&] {
        std::ifstream in(dir + "/port");
        return static_cast<bool>(in >> port) && port > 0;
      },
      absl::Seconds(30)))
      << (*remote)->Log();
  const std::string remote_target = absl::StrCat((*ns)->inside_address(), ":", port);
  testing::Server router = testing::MustStart(
      testing::RouterBinary(), {"--model=" + model, "--layer=0", "--info_shows_topology",
                                "--shards=0-7@" + local.target() + ",0-7@" + remote_target});
  auto stub =
      v1::Router::NewStub(grpc::CreateChannel(router.target(), grpc::InsecureChannelCredentials()));
  ASSERT_TRUE(PollUntil([&] { return ShardStatus(*stub, remote_target).first == "SERVING"; },
                        absl::Seconds(10)));

  testing::LoadLoop load(router.target(), Request(), kClients, kDeadline);
  absl::SleepFor(absl::Seconds(1));  // healthy load before the fault
  const absl::Time partitioned_at = absl::Now();
  ASSERT_TRUE((*ns)->Partition().ok());
  std::string state;
  const bool detected = PollUntil(
      [&] {
        state = ShardStatus(*stub, remote_target).first;
        return state != "SERVING" && !state.empty();
      },
      absl::Seconds(10));
  const absl::Duration detection = absl::Now() - partitioned_at;
  // Load keeps running through the partition for 3 s in all (the fault's duration).
  absl::SleepFor(std::max(absl::ZeroDuration(), absl::Seconds(3) - detection));
  load.Stop();
  (*ns)->Heal().IgnoreError();
  std::cout << "partition of 1 of 2 replica hosts, " << kClients
            << " clients, 2 s deadlines: " << load.Summary() << "; Info says " << state << " "
            << detection << " after the partition" << std::endl;
  EXPECT_TRUE(load.Failures().empty()) << load.Summary() << FailureList(load.Failures());
  EXPECT_TRUE(detected) << "Info still says " << state;
  EXPECT_LT(detection, absl::Seconds(5));
}

}  // namespace
}  // namespace moe
