// The router's view of its shards: which targets there are (from --shards, or a --shards_file
// re-read on change), what each serves (learned from the shard's own Describe, never assumed),
// whether that matches the router's model and the target's declaration, and whether it is
// reachable. Publishes a ReplicaMap snapshot of the usable replicas and tells its owner when
// coverage (every expert of every served layer held by a usable replica) is gained or lost.
//
// Refresh() asks every target twice (two backends behind one DNS name must agree; otherwise the
// target is rejected with both answers in the reason), probes ejected replicas, and rebuilds the
// snapshot. A serving target leaves the map after two unanswered refreshes in a row (one may be
// a starved process), at once when its answer disqualifies it. StartRefreshing() does so every
// `refresh_interval` on a thread of its own, so shards that start later, restart with other experts
// or disappear are picked up within an interval (200 ms while some expert has no serving shard).
// A target dropped from the list takes its metric series with it (drop_replica_metrics), so a
// list whose targets churn (pod IPs) keeps the scrape bounded. Thread-safe.
#ifndef MOE_ROUTER_SERVICE_SHARD_DIRECTORY_H_
#define MOE_ROUTER_SERVICE_SHARD_DIRECTORY_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/checkpoint/model_identity.h"
#include "router_service/replica.h"
#include "router_service/replica_map.h"
#include "router_service/shard_client.h"
#include "router_service/shard_targets.h"

namespace moe {

// A shard group's name, for metric labels: what its replicas hold, "layers 0-3 experts 4-7".
std::string ShardGroupName(const ShardDescription& description);

// A target's state for Info and logs.
struct TargetStatus {
  std::string target;
  std::optional<ExpertSet> declared;
  std::optional<ShardDescription> description;  // the last answer, if any
  // SERVING | UNKNOWN | UNREACHABLE | REJECTED | EJECTED; REMOVED only to target_changed.
  std::string state;
  std::string problem;  // why it is not SERVING
  ReplicaCounters counters;
  std::string connectivity;  // the channel's, e.g. READY
};

struct DirectoryOptions {
  absl::Duration refresh_interval = absl::Seconds(1);
  absl::Duration describe_timeout = absl::Seconds(2);
  ReplicaPolicy replica;
  // The metric cells of a target serving a shard group (ShardGroupName; router_metrics.h), asked
  // for when a target is first found serving and whenever it comes back holding other experts;
  // unset: none. Called under the directory's lock, only for a target listed at that moment.
  std::function<ReplicaMetrics(const std::string& target, const std::string& shard_group)>
      replica_metrics;
  // Called with each target SetTargets drops from the list, under the directory's lock, once no
  // replica counts into the cells replica_metrics gave for it (every replica leaving the
  // directory, dropped or redeclared, is first detached: Replica::SetMetrics({})), so the owner
  // may remove the target's series. A target listed again later gets new ones. Unset: nothing.
  std::function<void(const std::string& target)> drop_replica_metrics;
  // Told a target's status whenever its state or shard group changes (not UNKNOWN, the state
  // before its first answer), and as REMOVED when SetTargets drops it from the list; outside the
  // directory's lock, before the coverage callback; for the router's log. Unset: nothing.
  std::function<void(const TargetStatus&)> target_changed;
};

class ShardDirectory {
 public:
  using ClientFactory = std::function<std::unique_ptr<ShardClient>(const std::string& target)>;
  // Called with the new coverage after every change: "" when covered, else the gaps.
  using CoverageCallback = std::function<void(const std::string& gaps)>;
  // Returns a new target list when the source changed (e.g. the shards file), else nullopt.
  using TargetSource = std::function<std::optional<std::vector<ShardTarget>>()>;

  ShardDirectory(ModelIdentity model, std::vector<int> layers, bool shared_on_shards,
                 ClientFactory make_client, DirectoryOptions options);
  ~ShardDirectory();  // stops refreshing; waits for Describe calls in flight
  ShardDirectory(const ShardDirectory&) = delete;
  ShardDirectory& operator=(const ShardDirectory&) = delete;

  // Replaces the target list: targets still listed keep their replica (and its state).
  void SetTargets(std::vector<ShardTarget> targets);
  void SetCoverageCallback(CoverageCallback callback);

  // Describes every target and probes ejected replicas once; returns when each answered or timed
  // out, with the snapshot rebuilt.
  void Refresh();
  // Polls `source` (may be null) and refreshes every refresh_interval until StopRefreshing or
  // destruction.
  void StartRefreshing(TargetSource source);
  // Stops the refresher (for good) and waits for it: after this neither `source` nor the coverage
  // callback is called by it. Idempotent.
  void StopRefreshing();

  std::shared_ptr<const ReplicaMap> replica_map() const;
  // "" when covered, else what is missing.
  std::string Gaps() const;
  std::vector<TargetStatus> Status() const;
  // The targets that hold (by their last answer, or by declaration) any of `experts` of `layer`,
  // or whose experts are not known (never reached), but are not usable now, with why:
  // "b:2 is UNREACHABLE: connection refused", "c:3 is UNREACHABLE (what it holds is not known
  // yet): ...". "" if none.
  std::string Unusable(int layer, const std::vector<int>& experts) const;
  // A request saw a replica's ejection state change: rebuild the snapshot now.
  void ReplicasChanged();

 private:
  // One refresh's answers. The Describe callbacks keep it alive, so a refresh abandoned at
  // shutdown does not leave them writing into freed memory.
  struct Round {
    absl::Mutex mu;
    std::vector<absl::StatusOr<ShardDescription>> answers ABSL_GUARDED_BY(mu);
    int pending ABSL_GUARDED_BY(mu) = 0;
    bool abandoned ABSL_GUARDED_BY(mu) = false;
  };
  struct Entry {
    ShardTarget spec;
    std::shared_ptr<Replica> replica;
    std::optional<ShardDescription> description;
    absl::Status problem = absl::UnavailableError("not described yet");
    bool asked = false;        // Describe was tried at least once
    int failed_refreshes = 0;  // unanswered refreshes in a row
    std::string shard_group;   // what its replica's metric cells are labelled with; "" for none
    std::string reported;      // the state and shard group last told to target_changed
  };
  // Status() of `entry` without its counters and connectivity.
  static TargetStatus StatusOf(const std::string& target, const Entry& entry);

  // The state a pair of Describe answers puts a target in.
  absl::Status Judge(const ShardTarget& spec, const absl::StatusOr<ShardDescription>& first,
                     const absl::StatusOr<ShardDescription>& second) const;
  // What to tell the callbacks after a rebuild, delivered once the lock is released.
  struct Notice {
    std::function<void(const TargetStatus&)> target_changed;
    std::vector<TargetStatus> changed;  // targets whose state or shard group changed
    CoverageCallback coverage;          // empty: coverage unchanged
    std::string gaps;
    void Deliver() const;
  };
  Notice Rebuild() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ModelIdentity model_;
  const std::vector<int> layers_;
  const bool shared_on_shards_;
  const ClientFactory make_client_;
  const DirectoryOptions options_;

  mutable absl::Mutex mu_;
  std::map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);  // by target
  std::shared_ptr<const ReplicaMap> replicas_ ABSL_GUARDED_BY(mu_);
  std::string gaps_ ABSL_GUARDED_BY(mu_);
  CoverageCallback on_coverage_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<Round> round_ ABSL_GUARDED_BY(mu_);  // the latest refresh's
  absl::Mutex refresh_mu_;                             // one Refresh at a time
  std::thread refresher_;
};

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_SHARD_DIRECTORY_H_
