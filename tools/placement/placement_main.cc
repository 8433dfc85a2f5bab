// moe_placement: reads per-expert load and a shard-slot layout, prints a balanced placement.
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/cli/parse_flags.h"
#include "tools/placement/expert_load.h"
#include "tools/placement/http_get.h"
#include "tools/placement/placement.h"
#include "tools/placement/placement_text.h"

ABSL_FLAG(std::string, load, "",
          "per-expert load: a router's metrics URL (http://HOST:PORT/metrics), a saved "
          "Prometheus text file, or a file of `expert count` lines (spaces or CSV)");
ABSL_FLAG(std::string, metric, moe::kRouterTokensMetric,
          "counter to read from Prometheus text (labels expert, layer)");
ABSL_FLAG(std::string, layer, "",
          "layer to balance when the metrics have several; \"all\" sums them (a shard's "
          "--experts apply to every layer it serves)");
ABSL_FLAG(int, num_experts, 0,
          "experts of the layer (0: one more than the largest id seen; set it when some "
          "experts may have no tokens yet)");
ABSL_FLAG(int, shards, 0, "number of shard processes");
ABSL_FLAG(int, slots, 0, "experts each shard can hold");
ABSL_FLAG(std::string, targets, "",
          "comma-separated gRPC target per shard for the router's --shards (default: "
          "placeholders TARGET_0, TARGET_1, ...)");
ABSL_FLAG(int, timeout_ms, 5000, "timeout fetching a metrics URL");

namespace moe {
namespace {

// What main parsed from the flags.
struct Options {
  std::string load;                  // URL or file
  std::string metric;                // counter name in Prometheus text
  std::string layer;                 // "", "all" or a layer
  int num_experts = 0;               // 0: from the data
  SlotLayout layout;                 // shards x slots
  std::vector<std::string> targets;  // one per shard, or empty
  absl::Duration timeout;            // for a URL
};

absl::StatusOr<std::string> ReadLoadSource(const Options& o) {
  if (absl::StartsWith(o.load, "http://") || absl::StartsWith(o.load, "https://")) {
    return HttpGet(o.load, o.timeout);
  }
  std::ifstream in(o.load);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read --load=", o.load));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::StatusOr<std::string> Run(const Options& o) {
  if (o.load.empty()) return absl::InvalidArgumentError("--load is required");
  absl::StatusOr<std::string> text = ReadLoadSource(o);
  if (!text.ok()) return text.status();
  // Prometheus text names the metric; a counts file is only numbers.
  const bool prometheus = absl::StrContains(*text, o.metric) || absl::StrContains(*text, "# TYPE ");
  absl::StatusOr<std::vector<double>> load =
      prometheus ? ExpertLoadFromPrometheusText(*text, o.metric, o.layer, o.num_experts)
                 : ParseExpertCounts(*text, o.num_experts);
  if (!load.ok()) return load.status();
  absl::StatusOr<Placement> naive = ContiguousPlacement(load->size(), o.layout);
  if (!naive.ok()) return naive.status();
  absl::StatusOr<Placement> placed = BalancedPlacement(*load, o.layout);
  if (!placed.ok()) return placed.status();
  return FormatPlacement(*placed, *naive, *load, o.targets, o.layout.slots_per_shard);
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Prints a placement of experts on shards that replicates hot experts and balances load.\n"
      "  moe_placement --load=SOURCE --shards=N --slots=K [--targets=T0,T1,...] [--layer=L|all]\n"
      "                [--num_experts=E] [--metric=NAME] [--timeout_ms=MS]\n"
      "  e.g. --load=http://router:9090/metrics --shards=4 --slots=5, or --load=counts.txt\n"
      "  (lines: expert count)");
  moe::ParseFlags(argc, argv);
  moe::Options o;
  o.load = absl::GetFlag(FLAGS_load);
  o.metric = absl::GetFlag(FLAGS_metric);
  o.layer = absl::GetFlag(FLAGS_layer);
  o.num_experts = absl::GetFlag(FLAGS_num_experts);
  o.layout = {absl::GetFlag(FLAGS_shards), absl::GetFlag(FLAGS_slots)};
  const std::string targets = absl::GetFlag(FLAGS_targets);
  if (!targets.empty()) o.targets = absl::StrSplit(targets, ',');
  o.timeout = absl::Milliseconds(absl::GetFlag(FLAGS_timeout_ms));
  absl::StatusOr<std::string> out = moe::Run(o);
  if (!out.ok()) {
    std::cerr << "moe_placement: " << out.status().message() << "\n";
    return 1;
  }
  std::cout << *out;
  return 0;
}
