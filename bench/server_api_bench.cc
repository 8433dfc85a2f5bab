// moe_server_api_bench: what a fan-out front costs on gRPC's sync server API (the router's: a
// handler thread per call, blocked until the shard replies arrive) against the callback API (no
// thread per call: the last reply's callback finishes the call). Each front answers a unary call
// (moe.v1.Router/Info) by calling two backends (moe.v1.Expert/Info, callback services answering
// at once) with the callback client API, as the router calls its shards, and replies when both
// did. Both fronts run through GrpcServer (common/rpc/server_runner.h) with the router's
// settings, each in its own process (this binary with --role), so that /proc gives each one's
// CPU time and context switches alone. A client in this process calls them for --seconds per
// round at each --concurrency, the two fronts taking turns (order alternating by round).
//
// Prints one JSON object: per front and concurrency, the medians over rounds of calls/s, the
// p50 latency, and the front process's CPU time and context switches (every thread's voluntary
// and involuntary) per call; and the calls that failed (none expected; not in the figures).
// Compare figures only within one run.
//
//   moe_server_api_bench [--seconds=3] [--rounds=3] [--concurrency=1,32]
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "common/cli/parse_flags.h"
#include "common/rpc/server_runner.h"
#include "moe/v1/expert.grpc.pb.h"
#include "moe/v1/router.grpc.pb.h"
#include "testing/subprocess.h"

ABSL_FLAG(double, seconds, 3, "Length of one timed run");
ABSL_FLAG(int, rounds, 3, "Runs per front and concurrency");
ABSL_FLAG(std::vector<std::string>, concurrency, std::vector<std::string>({"1", "32"}),
          "Client threads, each calling in a loop");
// Internal: how the driver starts its servers.
ABSL_FLAG(std::string, role, "", "backend | sync_front | callback_front (internal)");
ABSL_FLAG(std::string, listen, "", "HOST:PORT (internal, with --role)");
ABSL_FLAG(std::string, port_file, "", "Where a server writes its port (internal, with --role)");
ABSL_FLAG(std::vector<std::string>, backends, {}, "A front's two backends (internal)");

namespace moe {
namespace {

class Backend final : public v1::Expert::CallbackService {
  grpc::ServerUnaryReactor* Info(grpc::CallbackServerContext* context, const v1::ExpertInfoRequest*,
                                 v1::ExpertInfo* info) override {
    info->set_family("bench");
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

struct Backends {
  explicit Backends(const std::vector<std::string>& targets) {
    for (const std::string& target : targets) {
      stubs.push_back(
          v1::Expert::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials())));
    }
  }
  std::vector<std::unique_ptr<v1::Expert::Stub>> stubs;
};

// One front call's requests to every backend, alive until its owner and every backend call let
// go of it: gRPC touches a client call after the callback of a plain lambda returns, so each
// backend call is a reactor whose OnDone, gRPC's last word on it, releases its reference.
class FanOut {
 public:
  // Starts the calls; `all_replied` runs once, on a gRPC thread, when every backend answered.
  static FanOut* Start(Backends* backends, std::function<void(const v1::ExpertInfo&)> all_replied) {
    auto* fan_out = new FanOut(backends->stubs.size(), std::move(all_replied));
    for (size_t i = 0; i < fan_out->calls_.size(); ++i) {
      Call& call = fan_out->calls_[i];
      call.fan_out = fan_out;
      backends->stubs[i]->async()->Info(&call.context, &fan_out->request_, &call.reply, &call);
      call.StartCall();
    }
    return fan_out;
  }
  void Release() {
    if (--references_ == 0) delete this;
  }

 private:
  struct Call final : grpc::ClientUnaryReactor {
    void OnDone(const grpc::Status&) override { fan_out->Replied(); }
    FanOut* fan_out = nullptr;
    grpc::ClientContext context;
    v1::ExpertInfo reply;
  };
  FanOut(size_t n, std::function<void(const v1::ExpertInfo&)> all_replied)
      : calls_(n), all_replied_(std::move(all_replied)), left_(n), references_(n + 1) {}
  void Replied() {
    if (--left_ == 0) all_replied_(calls_[0].reply);
    Release();
  }

  std::vector<Call> calls_;
  v1::ExpertInfoRequest request_;
  const std::function<void(const v1::ExpertInfo&)> all_replied_;
  std::atomic<size_t> left_;
  std::atomic<size_t> references_;  // the backend calls' and the owner's
};

// The router's way: the handler thread blocks until the replies are in.
class SyncFront final : public v1::Router::Service {
 public:
  explicit SyncFront(Backends* backends) : backends_(backends) {}
  grpc::Status Info(grpc::ServerContext*, const v1::InfoRequest*, v1::ModelInfo* info) override {
    absl::Notification replied;
    FanOut* fan_out = FanOut::Start(backends_, [&](const v1::ExpertInfo& reply) {
      info->set_family(reply.family());
      replied.Notify();
    });
    replied.WaitForNotification();
    fan_out->Release();
    return grpc::Status::OK;
  }

 private:
  Backends* backends_;
};

// No thread per call: the last reply finishes the call.
class CallbackFront final : public v1::Router::CallbackService {
 public:
  explicit CallbackFront(Backends* backends) : backends_(backends) {}
  grpc::ServerUnaryReactor* Info(grpc::CallbackServerContext*, const v1::InfoRequest*,
                                 v1::ModelInfo* info) override {
    return new Call(backends_, info);
  }

 private:
  class Call final : public grpc::ServerUnaryReactor {
   public:
    Call(Backends* backends, v1::ModelInfo* info) {
      fan_out_ = FanOut::Start(backends, [this, info](const v1::ExpertInfo& reply) {
        info->set_family(reply.family());
        Finish(grpc::Status::OK);
      });
    }
    void OnDone() override {
      fan_out_->Release();
      delete this;
    }

   private:
    FanOut* fan_out_;
  };
  Backends* backends_;
};

int Serve(const std::string& role) {
  ServeOptions options;
  options.name = absl::StrCat("moe_server_api_bench ", role);
  options.listen = absl::GetFlag(FLAGS_listen);
  options.port_file = absl::GetFlag(FLAGS_port_file);
  options.max_threads = 512;  // the router's default (router_service/main.cc --max_threads)
  Backend backend;
  Backends backends(absl::GetFlag(FLAGS_backends));
  SyncFront sync_front(&backends);
  CallbackFront callback_front(&backends);
  const std::map<std::string, grpc::Service*> services = {
      {"backend", &backend}, {"sync_front", &sync_front}, {"callback_front", &callback_front}};
  grpc::Service* service = services.count(role) > 0 ? services.at(role) : nullptr;
  if (service == nullptr) {
    std::cerr << "moe_server_api_bench: unknown --role=" << role << std::endl;
    return 2;
  }
  absl::StatusOr<std::unique_ptr<GrpcServer>> server = GrpcServer::Start(options, {service});
  if (!server.ok()) {
    std::cerr << server.status() << std::endl;
    return 1;
  }
  absl::Notification never;  // serves until the driver's SIGTERM ends the process
  never.WaitForNotification();
  return 0;
}

// CPU seconds and context switches of every thread of `pid` so far.
struct ProcessUsage {
  double cpu_seconds = 0;
  double switches = 0;
};
ProcessUsage UsageOf(pid_t pid) {
  ProcessUsage usage;
  std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
  std::string line;
  std::getline(stat, line);
  // Fields after the command's closing parenthesis: state is field 3; utime, stime 14 and 15.
  const std::vector<std::string> fields =
      absl::StrSplit(line.substr(line.rfind(')') + 2), ' ', absl::SkipEmpty());
  usage.cpu_seconds = (std::stod(fields[11]) + std::stod(fields[12])) / sysconf(_SC_CLK_TCK);
  for (const auto& task :
       std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/task"))) {
    std::ifstream status(task.path() / "status");
    for (std::string entry; std::getline(status, entry);) {
      double count = 0;
      const std::vector<std::string> parts = absl::StrSplit(entry, ':');
      if (parts.size() == 2 && absl::StrContains(parts[0], "ctxt_switches") &&
          absl::SimpleAtod(absl::StripAsciiWhitespace(parts[1]), &count)) {
        usage.switches += count;
      }
    }
  }
  return usage;
}

struct RunResult {
  double calls_per_s = 0, p50_ms = 0, cpu_us_per_call = 0, switches_per_call = 0;
  int64_t failed_calls = 0;  // not counted in the figures above
};

RunResult Load(const std::string& target, pid_t front, int concurrency, double seconds) {
  auto stub = v1::Router::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  using Clock = std::chrono::steady_clock;
  const ProcessUsage before = UsageOf(front);
  const Clock::time_point start = Clock::now();
  const Clock::time_point end =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  std::vector<std::vector<double>> latencies(concurrency);
  std::atomic<int64_t> failures{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < concurrency; ++c) {
    clients.emplace_back([&, c] {
      while (Clock::now() < end) {
        grpc::ClientContext context;
        v1::ModelInfo info;
        const auto sent = Clock::now();
        const grpc::Status status = stub->Info(&context, v1::InfoRequest(), &info);
        if (!status.ok()) {
          failures.fetch_add(1);
          continue;
        }
        latencies[c].push_back(
            std::chrono::duration<double, std::milli>(Clock::now() - sent).count());
      }
    });
  }
  for (std::thread& client : clients) client.join();
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  const ProcessUsage after = UsageOf(front);
  std::vector<double> all;
  for (const auto& some : latencies) all.insert(all.end(), some.begin(), some.end());
  RunResult result;
  result.failed_calls = failures.load();
  if (all.empty()) return result;
  std::sort(all.begin(), all.end());
  const double calls = static_cast<double>(all.size());
  result.calls_per_s = calls / wall;
  result.p50_ms = all[all.size() / 2];
  result.cpu_us_per_call = (after.cpu_seconds - before.cpu_seconds) * 1e6 / calls;
  result.switches_per_call = (after.switches - before.switches) / calls;
  return result;
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

int Drive() {
  if (absl::GetFlag(FLAGS_rounds) < 1 || !(absl::GetFlag(FLAGS_seconds) > 0)) {
    std::cerr << "moe_server_api_bench: --rounds must be >= 1 and --seconds > 0" << std::endl;
    return 2;
  }
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  std::vector<testing::Server> backends;
  std::vector<std::string> targets;
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<testing::Server> backend = testing::StartServer(self, {"--role=backend"});
    if (!backend.ok()) {
      std::cerr << backend.status() << std::endl;
      return 1;
    }
    targets.push_back(backend->target());
    backends.push_back(*std::move(backend));
  }
  const std::vector<std::string> fronts = {"sync_front", "callback_front"};
  std::vector<testing::Server> servers;
  for (const std::string& role : fronts) {
    absl::StatusOr<testing::Server> front =
        testing::StartServer(self, {"--role=" + role, "--backends=" + absl::StrJoin(targets, ",")});
    if (!front.ok()) {
      std::cerr << front.status() << std::endl;
      return 1;
    }
    servers.push_back(*std::move(front));
  }
  std::vector<std::string> parts;
  for (const std::string& text : absl::GetFlag(FLAGS_concurrency)) {
    int concurrency = 0;
    if (!absl::SimpleAtoi(text, &concurrency) || concurrency < 1 || concurrency > 256) {
      std::cerr << "moe_server_api_bench: --concurrency takes 1..256, got " << text << std::endl;
      return 2;
    }
    std::map<std::string, std::vector<RunResult>> runs;
    for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
      for (size_t turn = 0; turn < fronts.size(); ++turn) {
        const size_t f = round % 2 == 0 ? turn : fronts.size() - 1 - turn;
        runs[fronts[f]].push_back(Load(servers[f].target(), servers[f].process->pid(), concurrency,
                                       absl::GetFlag(FLAGS_seconds)));
        std::cerr << "concurrency " << concurrency << " round " << round + 1 << " " << fronts[f]
                  << ": " << runs[fronts[f]].back().calls_per_s << " calls/s" << std::endl;
      }
    }
    for (const std::string& front : fronts) {
      int64_t failed = 0;
      for (const RunResult& run : runs[front]) failed += run.failed_calls;
      auto median = [&](double RunResult::*field) {
        std::vector<double> values;
        for (const RunResult& run : runs[front]) values.push_back(run.*field);
        return Median(values);
      };
      parts.push_back(absl::StrFormat(
          R"("%s_c%d": {"calls_per_s": %.0f, "p50_ms": %.3f, "front_cpu_us_per_call": %.1f, )"
          R"("front_context_switches_per_call": %.1f, "failed_calls": %d})",
          front, concurrency, median(&RunResult::calls_per_s), median(&RunResult::p50_ms),
          median(&RunResult::cpu_us_per_call), median(&RunResult::switches_per_call), failed));
    }
  }
  std::cout << "{" << absl::StrJoin(parts, ", ") << "}" << std::endl;
  return 0;
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "What a fan-out front costs on gRPC's sync and callback server APIs.\n"
      "  moe_server_api_bench [--seconds=3] [--rounds=3] [--concurrency=1,32]");
  moe::ParseFlags(argc, argv);
  const std::string role = absl::GetFlag(FLAGS_role);
  return role.empty() ? moe::Drive() : moe::Serve(role);
}
