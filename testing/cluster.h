// A real cluster for end-to-end tests: moe_expert processes for the given expert sets and a
// moe_router over them, all on ephemeral loopback ports, stopped when the Cluster is destroyed.
// Two modes: one layer with declared shards (SPEC@TARGET), or the whole model (WholeModel: every
// process with --layers=all, the router learning its shards from bare targets, optionally from a
// --shards_file the test rewrites).
#ifndef MOE_TESTING_CLUSTER_H_
#define MOE_TESTING_CLUSTER_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/config.h"
#include "absl/time/time.h"
#include "moe/v1/expert.grpc.pb.h"
#include "moe/v1/router.grpc.pb.h"
#include "testing/subprocess.h"

namespace moe::testing {

const std::string& ExpertBinary();
const std::string& RouterBinary();

// Starts `binary` with `args`, failing the test (and returning an empty Server) if it cannot.
Server MustStart(const std::string& binary, std::vector<std::string> args);

// A Forward request for n tokens of width d, asking for the routing.
v1::ForwardRequest MakeRequest(const std::vector<float>& values, int64_t n, int64_t d);

// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout);

// The router's (or a shard's) grpc.health.v1 status for "", or "error CODE".
std::string HealthOf(const std::string& target);

// A shard's Info (fails the test if it does not answer).
v1::ExpertInfo ExpertInfoOf(const std::string& target);

// VmRSS of a process in KiB (0 if unreadable).
int64_t ResidentKb(int pid);

// Whether VmRSS overstates what a process holds: under AddressSanitizer its shadow memory and its
// quarantine of freed blocks (a shard's load buffers) count too, so resident-memory bounds skip.
#ifdef ABSL_HAVE_ADDRESS_SANITIZER
inline constexpr bool kResidentMemoryInflated = true;
#else
inline constexpr bool kResidentMemoryInflated = false;
#endif

// How many times longer the servers may take to recover from a flood under AddressSanitizer than
// in an optimised build: its instrumented servers clear 256 abandoned calls in up to ~1.1 s on 2
// shared cores (a few ms optimised), so bounds on recovery time scale by this.
#ifdef ABSL_HAVE_ADDRESS_SANITIZER
inline constexpr int kSanitizerSlowdown = 5;
#else
inline constexpr int kSanitizerSlowdown = 1;
#endif

// Options of Cluster::WholeModel.
struct WholeModelOptions {
  bool shards_file = false;  // give the router --shards_file (rewritable) instead of --shards
  bool wait_serving = true;  // return only once the router reports SERVING (or after 30 s)
  std::vector<std::string> extra_targets;  // listed after the started shards' targets
  std::vector<std::string> router_flags;
  std::vector<std::string> expert_flags;
};

class Cluster {
 public:
  // Whole-model mode: one shard per expert set in `specs`, each with --layers=all, and a router
  // with --layers=all over their bare targets (no declared experts: learned from the shards).
  static std::unique_ptr<Cluster> WholeModel(const std::string& model,
                                             const std::vector<std::string>& specs,
                                             WholeModelOptions options = {});

  // One shard per expert set in `specs` (each may include "shared"); the router covers them.
  Cluster(const std::string& model, int layer, const std::vector<std::string>& specs,
          std::vector<std::string> router_flags = {},
          const std::vector<std::string>& expert_flags = {});

  grpc::Status Forward(const v1::ForwardRequest& request, v1::ForwardResponse* response,
                       absl::Duration timeout = absl::Seconds(10));
  v1::ModelInfo Info();
  v1::ExpertInfo ExpertInfo(int shard);

  // Whole-model mode: starts one more shard of the model (--layers=all --experts=spec) that the
  // router does not know of until it is listed (SetShardsFile); extra args are appended.
  Server StartShard(const std::string& spec, const std::vector<std::string>& extra = {});
  // Whole-model mode with a shards file: replaces its contents atomically (the router polls it).
  void SetShardsFile(const std::vector<std::string>& targets);
  const std::string& shards_file() const { return shards_file_; }

  v1::Router::Stub& router() { return *stub_; }
  Server& expert(int i) { return experts_[i]; }
  Server& router_server() { return router_; }

 private:
  Cluster() = default;
  void ConnectRouter();

  std::string model_;
  std::vector<std::string> expert_flags_;
  std::string shards_file_;
  std::vector<Server> experts_;
  Server router_;
  std::unique_ptr<v1::Router::Stub> stub_;
};

}  // namespace moe::testing

#endif  // MOE_TESTING_CLUSTER_H_
