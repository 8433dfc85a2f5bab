// The router's core: for one request and one layer, the gate, routing, fan-out to the shards
// holding the chosen experts (all calls in flight at once, hedged and retried across replicas;
// router_service/fanout.h), the shared expert computed locally meanwhile, and the weighted sum.
// Serves every MoE layer it is given; the shards come from a ShardDirectory that learns and
// checks what each target holds. Concurrent requests for a layer share a fan-out
// (router_service/request_batcher.h): each keeps its own gate, routing, answer and errors (a
// batch refused for one request's token or expert reruns request by request).
//
// Plain C++: it sees neither the public API nor the shard protocol. RouterServiceImpl converts
// the public API; ShardClient implementations (gRPC, in-process, test fakes) talk to shards.
//
// Errors (DESIGN.md §7): InvalidArgument for a layer not served (naming the served ones) and for
// finite input whose output overflows float32 (naming the token); ResourceExhausted for too many
// tokens; Unavailable naming the experts and shard(s) when no replica could compute them;
// DeadlineExceeded when the deadline passes; Internal naming the shard for a malformed reply or a
// shard error. Never a partial sum unless `allow_partial`, and then the answer says which experts
// are missing. Thread-safe: Forward may run concurrently.
#ifndef MOE_ROUTER_SERVICE_ROUTER_H_
#define MOE_ROUTER_SERVICE_ROUTER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/checkpoint/layer_loader.h"
#include "common/checkpoint/model_config.h"
#include "common/kernels/thread_pool.h"
#include "common/routing/routing.h"
#include "common/tensor/matrix.h"
#include "router_service/request_batcher.h"
#include "router_service/router_metrics.h"
#include "router_service/shard_directory.h"

namespace moe {

class Fanout;

struct RouterOptions {
  std::string model_dir;       // Hugging Face checkpoint directory
  std::string layers = "all";  // MoE layers to serve: all | 3 | 1-15 | 1,3,5
  std::string shards;          // TARGET or SPEC@TARGET entries (router_service/shard_targets.h)
  int max_tokens = 8192;       // per request; more is ResourceExhausted
  // Deadline of a request whose client set none, so no request can hang. A client's own
  // deadline is used as it is, longer or shorter.
  absl::Duration default_timeout = absl::Seconds(30);
  bool hedging = true;         // hedge slow shard calls on another replica
  bool allow_partial = false;  // answer without experts that failed, saying which
  // Ask shards for per-token weighted partial sums (one row per token and shard) instead of one
  // row per (token, expert). Not with allow_partial while shards compute the shared expert.
  bool partial_sums = true;
  // Threads of the local shared expert's FFN; 0: one per CPU this process may use.
  int kernel_threads = 0;
  // Concurrent requests for one layer fanned out together (router_service/request_batcher.h).
  RequestBatchingOptions batching;
  DirectoryOptions directory;
  // Where to register the router's metrics (router_service/router_metrics.h); null: none. Must
  // outlive the Router.
  MetricRegistry* metrics = nullptr;
};

struct ForwardResult {
  Routing routing;                   // final weights (renormalised when experts are missing)
  std::vector<int> missing_experts;  // only with allow_partial; ascending
};

// Counters since start, for Info and metrics.
struct RouterCounters {
  int64_t requests = 0;
  int64_t partial_answers = 0;
  int64_t hedges = 0;
  int64_t hedges_won = 0;
  int64_t retries = 0;
  int64_t batches = 0;  // fan-outs: fewer than requests when cross-request batching merges them
};

class Router {
 public:
  // Loads every served layer's gate (and shared expert unless --shards places it on shards),
  // parses the shard list, and asks every shard once what it serves. Serving does not wait for
  // the shards: directory().Gaps() says what is missing.
  static absl::StatusOr<std::unique_ptr<Router>> Create(const RouterOptions& options,
                                                        ShardDirectory::ClientFactory make_client);
  ~Router();

  // tokens [T, d_model] (validated finite by the caller) → output [T, d_model] (overwritten).
  // `layer` unset: the one layer served. `deadline` absl::InfiniteFuture(): the client set none.
  // `client_cancelled`, if set, says whether the caller went away: a request still waiting for
  // its batch is then never sent (Cancelled); shard calls out for it alone, or for a batch all of
  // whose callers went away, are cancelled within 50 ms (Fanout::Wait) and the request ends with
  // their error. May wait for its layer's batch in flight (RequestBatcher).
  absl::StatusOr<ForwardResult> Forward(
      std::optional<int> layer, ConstMatrixView tokens, absl::Time deadline, MatrixView output,
      const std::function<bool()>& client_cancelled = nullptr) const;

  // Cancels every request in flight (their shard calls end with Cancelled). For shutdown.
  void CancelAll() const;

  const ModelConfig& config() const { return config_; }
  const std::vector<int>& layers() const { return layers_; }
  int max_tokens() const { return options_.max_tokens; }
  absl::Duration default_timeout() const { return options_.default_timeout; }
  bool shared_expert_local() const { return config_.shared.width > 0 && !shared_on_shards_; }
  bool allow_partial() const { return options_.allow_partial; }
  ShardDirectory& directory() const { return *directory_; }
  RouterCounters counters() const;
  // Null when RouterOptions::metrics was.
  RouterMetrics* metrics() const { return metrics_.get(); }

  // Test seam: blocks until `requests` requests for `layer` wait for a batch to start.
  void TEST_AwaitQueued(int layer, int requests) const;

 private:
  struct Layer {
    int layer;
    GateWeights gate;
    std::vector<float> shared_gate;       // qwen2_moe's [d_model] shared expert gate, else empty
    std::optional<SwigluWeights> shared;  // set when the router computes the shared expert
  };

  struct PendingForward;

  Router(RouterOptions options, ModelConfig config, std::vector<Layer> layers,
         bool shared_on_shards, std::unique_ptr<RouterMetrics> metrics,
         std::unique_ptr<ShardDirectory> directory, int kernel_threads);
  // The batcher's run function: one Dispatch for every PendingForward of `batch`, each request
  // given its rows of the answer, its renormalised weights and its missing experts.
  void RunBatch(absl::Span<RequestBatcher::Request* const> batch) const;
  // Dispatch for one request, into its own buffers.
  void RunAlone(PendingForward& request) const;
  // Fans `tokens` out to the shards holding the experts `routing` chose and sums the replies
  // (and the shared expert) into `output`. With allow_partial, renormalises `routing`'s weights
  // over the experts that answered and returns those that did not (ascending).
  absl::StatusOr<std::vector<int>> Dispatch(const Layer& layer, ConstMatrixView tokens,
                                            Routing& routing, absl::Time deadline,
                                            MatrixView output,
                                            const std::function<bool()>& cancelled) const;
  // Counts `routing`'s tokens per expert of layer_state_[layer_position] (metrics on).
  void CountTokens(int layer_position, const Routing& routing) const;

  absl::StatusOr<const Layer*> FindLayer(std::optional<int> layer) const;
  // qwen2_moe's sigmoid(shared_expert_gate · x) for token t, else 1.
  float SharedExpertScale(const Layer& layer, ConstMatrixView tokens, int64_t t) const;
  // output = the shared expert's part (or zeros), computed while the shard calls are in flight.
  absl::Status SharedExpert(const Layer& layer, ConstMatrixView tokens, MatrixView output) const;

  const RouterOptions options_;
  const ModelConfig config_;
  const std::vector<Layer> layer_state_;
  const std::vector<int> layers_;
  const bool shared_on_shards_;
  const std::unique_ptr<RouterMetrics> metrics_;  // declared before the directory that uses it
  const std::unique_ptr<ShardDirectory> directory_;
  const std::unique_ptr<KernelThreadPool> pool_;  // the local shared expert's FFN threads
  const std::unique_ptr<RequestBatcher> batcher_;

  mutable absl::Mutex mu_;
  mutable absl::flat_hash_set<Fanout*> in_flight_ ABSL_GUARDED_BY(mu_);
  mutable bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  mutable std::atomic<int64_t> requests_{0}, partial_answers_{0}, hedges_{0}, hedges_won_{0},
      retries_{0}, batches_{0};
};

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_ROUTER_H_
