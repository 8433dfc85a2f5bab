#include "router_service/shard_directory.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/time/clock.h"

namespace moe {
namespace {

// Consecutive unanswered refreshes that take a serving shard out of the map.
constexpr int kRefreshesToDrop = 2;
// The refresh interval while some expert has no serving shard.
constexpr absl::Duration kUncoveredRefresh = absl::Milliseconds(200);

std::string DescribeAnswer(const ShardDescription& d) {
  return absl::StrCat(ShardGroupName(d), " (", d.identity.fingerprint, ")");
}

bool SameAnswer(const ShardDescription& a, const ShardDescription& b) {
  return a.layers == b.layers && a.experts == b.experts &&
         a.identity.fingerprint == b.identity.fingerprint &&
         a.identity.d_model == b.identity.d_model;
}

}  // namespace

std::string ShardGroupName(const ShardDescription& description) {
  return absl::StrCat("layers ", FormatExpertIds(description.layers), " experts ",
                      FormatExpertSet(description.experts));
}

ShardDirectory::ShardDirectory(ModelIdentity model, std::vector<int> layers, bool shared_on_shards,
                               ClientFactory make_client, DirectoryOptions options)
    : model_(std::move(model)),
      layers_(std::move(layers)),
      shared_on_shards_(shared_on_shards),
      make_client_(std::move(make_client)),
      options_(options) {
  absl::MutexLock lock(&mu_);
  Rebuild();
}

ShardDirectory::~ShardDirectory() { StopRefreshing(); }

void ShardDirectory::StopRefreshing() {
  std::shared_ptr<Round> round;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    round = round_;
  }
  if (round != nullptr) {
    absl::MutexLock lock(&round->mu);
    round->abandoned = true;  // a refresh in progress stops waiting for shards that hang
  }
  if (refresher_.joinable()) refresher_.join();
}

void ShardDirectory::SetTargets(std::vector<ShardTarget> targets) {
  Notice notice;
  {
    absl::MutexLock lock(&mu_);
    std::map<std::string, Entry> entries;
    for (ShardTarget& spec : targets) {
      auto old = entries_.find(spec.target);
      if (old != entries_.end() && old->second.spec == spec) {
        entries.emplace(spec.target, std::move(old->second));
        continue;
      }
      // Redeclared: a new replica takes over; the old one stops counting (Replica::SetMetrics).
      if (old != entries_.end()) old->second.replica->SetMetrics({});
      Entry entry;
      entry.replica = std::make_shared<Replica>(make_client_(spec.target), options_.replica);
      entry.spec = std::move(spec);
      entries.emplace(entry.spec.target, std::move(entry));
    }
    // Targets no longer listed leave with their replicas and metric series; the log says so
    // first. Each replica stops counting before the series go, so a call still in flight on it
    // records nothing rather than into a removed cell.
    std::vector<TargetStatus> removed;
    for (const auto& [target, entry] : entries_) {
      if (entries.count(target) != 0) continue;
      entry.replica->SetMetrics({});
      if (options_.drop_replica_metrics) options_.drop_replica_metrics(target);
      if (!options_.target_changed) continue;
      TargetStatus status = StatusOf(target, entry);
      status.state = "REMOVED";
      status.problem = "no longer listed";
      removed.push_back(std::move(status));
    }
    entries_ = std::move(entries);
    notice = Rebuild();
    notice.changed.insert(notice.changed.begin(), removed.begin(), removed.end());
  }
  notice.Deliver();
}

void ShardDirectory::SetCoverageCallback(CoverageCallback callback) {
  std::string gaps;
  {
    absl::MutexLock lock(&mu_);
    on_coverage_ = callback;
    gaps = gaps_;
  }
  if (callback) callback(gaps);
}

absl::Status ShardDirectory::Judge(const ShardTarget& spec,
                                   const absl::StatusOr<ShardDescription>& first,
                                   const absl::StatusOr<ShardDescription>& second) const {
  if (!first.ok()) return first.status();
  if (second.ok() && !SameAnswer(*first, *second)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the backends behind this target disagree: one serves ", DescribeAnswer(*first),
        ", another ", DescribeAnswer(*second), "; give each expert set its own target"));
  }
  if (absl::Status same = CheckIdentity(model_, first->identity); !same.ok()) return same;
  // The map is indexed by these ids: a shard's word is not enough.
  const std::vector<int>& ids = first->experts.ids;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= model_.num_experts || (i > 0 && ids[i] == ids[i - 1])) {
      return absl::FailedPreconditionError(absl::StrCat(
          "reports expert ", ids[i], ids[i] >= 0 && ids[i] < model_.num_experts ? " twice" : "",
          "; the model's experts are 0-", model_.num_experts - 1, ", each held once"));
    }
  }
  if (spec.declared.has_value() && !(*spec.declared == first->experts)) {
    return absl::FailedPreconditionError(
        absl::StrCat("declared as experts ", FormatExpertSet(*spec.declared),
                     " in --shards but holds ", FormatExpertSet(first->experts)));
  }
  bool serves_a_layer = false;
  for (int layer : first->layers) {
    serves_a_layer = serves_a_layer || std::binary_search(layers_.begin(), layers_.end(), layer);
  }
  if (!serves_a_layer) {
    return absl::FailedPreconditionError(absl::StrCat(
        "holds layers ", absl::StrJoin(first->layers, ","),
        ", none of the layers this router serves (", absl::StrJoin(layers_, ","), ")"));
  }
  return absl::OkStatus();
}

void ShardDirectory::Refresh() {
  absl::MutexLock one_at_a_time(&refresh_mu_);
  auto round = std::make_shared<Round>();
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    round_ = round;
  }
  struct Ask {
    ShardTarget spec;
    std::shared_ptr<Replica> replica;
  };
  std::vector<Ask> asks;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [target, entry] : entries_) asks.push_back({entry.spec, entry.replica});
  }
  {
    absl::MutexLock lock(&round->mu);
    round->answers.assign(2 * asks.size(), absl::UnknownError("no answer"));
    round->pending = static_cast<int>(round->answers.size());
  }
  const absl::Time deadline = absl::Now() + options_.describe_timeout;
  for (size_t i = 0; i < 2 * asks.size(); ++i) {
    asks[i / 2].replica->client().Describe(
        deadline, [round, i](absl::StatusOr<ShardDescription> description) {
          absl::MutexLock lock(&round->mu);
          round->answers[i] = std::move(description);
          --round->pending;
        });
  }
  std::vector<absl::StatusOr<ShardDescription>> answers;
  {
    absl::MutexLock lock(&round->mu);
    auto answered = [&round]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(round->mu) {
      return round->pending == 0 || round->abandoned;
    };
    round->mu.Await(absl::Condition(&answered));
    if (round->abandoned) return;
    answers = round->answers;
  }

  Notice notice;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    for (size_t a = 0; a < asks.size(); ++a) {
      const Ask& ask = asks[a];
      auto it = entries_.find(ask.spec.target);
      if (it == entries_.end() || it->second.replica != ask.replica) continue;  // replaced
      Entry& entry = it->second;
      absl::Status problem = Judge(ask.spec, answers[2 * a], answers[2 * a + 1]);
      // A serving shard that misses one refresh (a slow or starved process) keeps serving; two
      // in a row take it out. Calls to a shard that is really gone fail fast meanwhile and are
      // retried elsewhere (fanout.h). Answers that disqualify it (another model) count at once.
      const bool unanswered = !answers[2 * a].ok();
      entry.failed_refreshes = unanswered ? entry.failed_refreshes + 1 : 0;
      if (!(unanswered && entry.problem.ok() && entry.failed_refreshes < kRefreshesToDrop)) {
        entry.problem = std::move(problem);
      }
      entry.asked = true;
      if (answers[2 * a].ok()) entry.description = *answers[2 * a];
      if (entry.problem.ok() && entry.description.has_value() && options_.replica_metrics) {
        // Metered by the group it serves: a new series when it comes back holding other experts.
        std::string group = ShardGroupName(*entry.description);
        if (group != entry.shard_group) {
          entry.replica->SetMetrics(options_.replica_metrics(ask.spec.target, group));
          entry.shard_group = std::move(group);
        }
      }
      // This Describe is an ejected replica's probe: only an answer brings it back (a first miss
      // keeps entry.problem OK above, but proves nothing about the replica).
      if (!unanswered && entry.problem.ok() && entry.replica->NeedsProbe(now)) {
        entry.replica->ProbeSucceeded();
      }
    }
    notice = Rebuild();
  }
  notice.Deliver();
}

void ShardDirectory::StartRefreshing(TargetSource source) {
  refresher_ = std::thread([this, source = std::move(source)] {
    while (true) {
      if (source) {
        if (std::optional<std::vector<ShardTarget>> targets = source(); targets.has_value()) {
          SetTargets(*std::move(targets));
        }
      }
      Refresh();
      absl::MutexLock lock(&mu_);
      // While something is uncovered, look again sooner: a restarted shard serves within about
      // kUncoveredRefresh of answering instead of a whole interval.
      const absl::Duration wait = gaps_.empty()
                                      ? options_.refresh_interval
                                      : std::min(options_.refresh_interval, kUncoveredRefresh);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), wait)) return;
    }
  });
}

void ShardDirectory::ReplicasChanged() {
  Notice notice;
  {
    absl::MutexLock lock(&mu_);
    notice = Rebuild();
  }
  notice.Deliver();
}

void ShardDirectory::Notice::Deliver() const {
  for (const TargetStatus& status : changed) target_changed(status);
  if (coverage) coverage(gaps);
}

ShardDirectory::Notice ShardDirectory::Rebuild() {
  Notice notice;
  if (options_.target_changed) {
    notice.target_changed = options_.target_changed;
    for (auto& [target, entry] : entries_) {
      TargetStatus status = StatusOf(target, entry);
      std::string reported =
          status.state == "UNKNOWN"
              ? ""
              : absl::StrCat(status.state, " ",
                             entry.description ? ShardGroupName(*entry.description) : "");
      if (reported == entry.reported) continue;
      entry.reported = std::move(reported);
      if (!entry.reported.empty()) notice.changed.push_back(std::move(status));
    }
  }
  auto map = std::make_shared<ReplicaMap>();
  map->layers = layers_;
  map->num_experts = model_.num_experts;
  map->shared_on_shards = shared_on_shards_;
  map->holders.assign(layers_.size(), std::vector<std::vector<int>>(model_.num_experts));
  map->shared_holders.assign(layers_.size(), {});
  for (const auto& [target, entry] : entries_) {
    // Ejected replicas stay in the map (ChooseReplicas and the fan-out use them only when no
    // other holder is left): ejection also follows lost hedges and overload, and a map without
    // them fails every request while the holders that remain are down.
    if (!entry.problem.ok() || !entry.description.has_value()) continue;
    const int index = static_cast<int>(map->replicas.size());
    map->replicas.push_back(entry.replica);
    for (int layer : entry.description->layers) {
      const int i = map->LayerIndex(layer);
      if (i < 0) continue;
      for (int e : entry.description->experts.ids) map->holders[i][e].push_back(index);
      if (shared_on_shards_ && entry.description->experts.shared) {
        map->shared_holders[i].push_back(index);
      }
    }
  }
  const std::string gaps = map->Gaps();
  replicas_ = std::move(map);
  if (gaps != gaps_) {
    gaps_ = gaps;
    notice.coverage = on_coverage_;
    notice.gaps = gaps_;
  }
  return notice;
}

std::shared_ptr<const ReplicaMap> ShardDirectory::replica_map() const {
  absl::MutexLock lock(&mu_);
  return replicas_;
}

std::string ShardDirectory::Gaps() const {
  absl::MutexLock lock(&mu_);
  return gaps_;
}

std::string ShardDirectory::Unusable(int layer, const std::vector<int>& experts) const {
  std::string out;
  for (const TargetStatus& status : Status()) {
    if (status.state == "SERVING") continue;
    std::optional<ExpertSet> held = status.declared;
    if (status.description.has_value()) {
      const std::vector<int>& layers = status.description->layers;
      if (std::find(layers.begin(), layers.end(), layer) == layers.end()) continue;
      held = status.description->experts;
    }
    // A bare target never described may hold them: it is named too, so that a router whose
    // shards it never reached says which and why.
    bool relevant = !held.has_value();
    for (int e : experts) {
      relevant = relevant ||
                 (e == kSharedExpertId ? held->shared
                                       : std::binary_search(held->ids.begin(), held->ids.end(), e));
    }
    if (relevant) {
      absl::StrAppend(&out, out.empty() ? "" : "; ", status.target, " is ", status.state,
                      held.has_value() ? "" : " (what it holds is not known yet)", ": ",
                      status.problem);
    }
  }
  return out;
}

std::vector<TargetStatus> ShardDirectory::Status() const {
  absl::MutexLock lock(&mu_);
  std::vector<TargetStatus> statuses;
  for (const auto& [target, entry] : entries_) {
    TargetStatus status = StatusOf(target, entry);
    status.counters = entry.replica->counters();
    status.connectivity = entry.replica->client().State();
    statuses.push_back(std::move(status));
  }
  return statuses;
}

TargetStatus ShardDirectory::StatusOf(const std::string& target, const Entry& entry) {
  TargetStatus status;
  status.target = target;
  status.declared = entry.spec.declared;
  status.description = entry.description;
  if (!entry.problem.ok()) {
    if (entry.problem.code() == absl::StatusCode::kFailedPrecondition) {
      status.state = "REJECTED";
    } else {
      status.state = entry.asked ? "UNREACHABLE" : "UNKNOWN";
    }
    // Without the "shard <target>: " a failed call's error starts with: the status names it.
    status.problem = std::string(
        absl::StripPrefix(entry.problem.message(), absl::StrCat("shard ", target, ": ")));
  } else if (entry.replica->Ejected()) {
    status.state = "EJECTED";
    status.problem = "ejected after repeated failures or timeouts; probed back when it answers";
  } else {
    status.state = "SERVING";
  }
  return status;
}

}  // namespace moe
