// moe_router: serves the MoE layers of a model (moe.v1.Router): gates and routing here, experts
// on shards it discovers and checks.
//
//   moe_router --model=DIR --layers=all --shards=TARGET[,TARGET...] --listen=HOST:PORT

#include <algorithm>
#include <iostream>
#include <optional>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/checkpoint/checkpoint.h"
#include "common/checkpoint/model_config.h"
#include "common/cli/flag_ranges.h"
#include "common/cli/human_units.h"
#include "common/cli/parse_flags.h"
#include "common/cli/serving_mutexes.h"
#include "common/kernels/blas_kernels.h"
#include "common/metrics/metric_registry.h"
#include "common/metrics/metrics_http_server.h"
#include "common/rpc/admission_gate.h"
#include "common/rpc/admission_queue.h"
#include "common/rpc/listen_port.h"
#include "common/rpc/memory_policy.h"
#include "common/rpc/open_file_limit.h"
#include "common/rpc/server_runner.h"
#include "common/rpc/shutdown_signal.h"
#include "common/rpc/tls_credentials.h"
#include "router_service/grpc_shard_client.h"
#include "router_service/router.h"
#include "router_service/router_service.h"
#include "router_service/shards_file.h"

ABSL_FLAG(std::string, model, "",
          "Required: Hugging Face checkpoint directory (config.json + safetensors)");
ABSL_FLAG(std::string, layers, "all",
          "MoE layers to serve: all (dense layers skipped), or e.g. 3, 1-15, 1,3,5");
ABSL_FLAG(int, layer, -1, "Same as --layers=N (kept for compatibility); -1: use --layers");
ABSL_FLAG(
    std::string, shards, "",
    "Expert shards: TARGET[,TARGET...], e.g. 127.0.0.1:50061,dns:///expert-1:50061; each "
    "shard's layers and experts are learned from it and checked. SPEC@TARGET entries "
    "(0-3@127.0.0.1:50061) declare what a shard must hold; 'shared@TARGET' has shards compute "
    "the shared expert. One of --shards or --shards_file is required");
ABSL_FLAG(std::string, shards_file, "",
          "A file holding the --shards list (commas or newlines between entries; at most 1 MiB), "
          "re-read when its contents change: add or drain shard hosts without restarting the "
          "router");
ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "Address to serve on (port 0 picks a free port)");
ABSL_FLAG(std::string, port_file, "", "If set, write the bound port to this file once serving");
ABSL_FLAG(int, max_tokens, 8192, "Most tokens accepted in one request");
ABSL_FLAG(int, default_timeout_ms, 30000,
          "Deadline of a request whose client set none (a client deadline is used as it is)");
ABSL_FLAG(int, blas_threads, 1, "OpenBLAS threads per call (gate and local shared expert)");
ABSL_FLAG(int, channels_per_shard, 2,
          "gRPC channels (HTTP/2 connections) to each shard target; calls spread over them");
ABSL_FLAG(bool, hedging, true,
          "Hedge a shard call that is late (twice the shard's recent p90 latency, 5 ms - 1 s) on "
          "another replica; the first answer wins");
ABSL_FLAG(bool, allow_partial, false,
          "When a shard fails, answer without its experts (weights renormalised over those that "
          "answered) and list them in ForwardResponse.missing_experts. Off: such a request fails");
ABSL_FLAG(bool, partial_sums, true,
          "Shards answer one weighted partial sum per token (Σ weight·expert output over the "
          "experts they hold) instead of one row per (token, expert): up to top_k/shards times "
          "fewer bytes back. Off with --allow_partial while shards compute the shared expert");
ABSL_FLAG(std::string, shard_wire_dtype, "f32",
          "Tensors to and from shards: f32, or bf16 (half the bytes; rounds every token and "
          "partial sum to 8 significant bits: each off by at most 2^-9 of itself)");
ABSL_FLAG(int, refresh_ms, 1000,
          "How often to ask every shard what it serves (discovery, identity checks, probes)");

ABSL_FLAG(std::string, tls_cert, "",
          "Serve TLS with this PEM certificate chain (with --tls_key); default: plaintext");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_ca, "",
          "Mutual TLS: clients must present a certificate signed by this PEM CA");
ABSL_FLAG(std::string, shard_tls_ca, "",
          "Call shards over TLS, trusting this PEM CA; default: plaintext (with only "
          "--shard_tls_cert/--shard_tls_key: TLS with the system's roots)");
ABSL_FLAG(std::string, shard_tls_cert, "",
          "PEM certificate presented to shards that require one (with --shard_tls_key)");
ABSL_FLAG(std::string, shard_tls_key, "", "PEM private key of --shard_tls_cert");
ABSL_FLAG(std::string, shard_tls_server_name, "",
          "Name to expect in every shard's certificate instead of the target's host");
ABSL_FLAG(bool, info_shows_topology, false,
          "Info lists each shard's target (internal addresses); off by default so the public "
          "API does not reveal them");
ABSL_FLAG(std::string, metrics_listen, "",
          "Serve Prometheus metrics on HTTP GET /metrics at this HOST:PORT (port 0 picks a free "
          "port); empty: no metrics");
ABSL_FLAG(std::string, metrics_port_file, "",
          "If set, write the bound metrics port to this file once serving");
ABSL_FLAG(int, drain_s, 5,
          "On SIGTERM or SIGINT: health NOT_SERVING at once, no new calls, calls in flight get "
          "this many seconds to finish (then they are cancelled), then exit");
ABSL_FLAG(int, unread_reply_timeout_s, 20,
          "Cancel a call whose reply the client has not taken (all of it written) this many "
          "seconds after it was ready, and a reflection stream open this long: a client that "
          "stops reading holds a server thread per call until then; 0: never");
ABSL_FLAG(int, max_threads, 512,
          "Most gRPC server threads (handlers and pollers; a queued Forward call holds one; a "
          "thread whose call finished waits for the next); 0 = unbounded (with --max_inflight=0)");
ABSL_FLAG(int, max_inflight, 32,
          "Most Forward calls computed at once (each sends a call to each of its shards, which "
          "admit 48 at once by default); more wait in a queue of --max_queued. 0: no limit and "
          "no queue (with --max_threads=0)");
ABSL_FLAG(int, max_inflight_tokens, 512,
          "Most tokens of the Forward calls computed at once (a call alone always may): the work "
          "in flight, which a small machine saturates with a few large calls, while one-token "
          "calls must run together for the shards to batch them. 0: no token bound");
ABSL_FLAG(int, max_batch_tokens, 256,
          "Cross-request batching: Forward calls for a layer that arrive while its last batch is "
          "fanning out go out together as the next one (one call per shard for all of them), up "
          "to this many tokens; 0 turns batching off. A call that finds its layer idle goes at "
          "once");
ABSL_FLAG(int, batch_wait_us, 20000,
          "How long after a batch was answered its callers are awaited back: the next batch "
          "waits until they and the calls queued then are queued again, at most this long and "
          "at most half of the last batch's time, so that clients that send again when "
          "answered meet in one batch instead of taking turns in two (0: never waits; a lone "
          "client never waits)");
ABSL_FLAG(int, batches_in_flight, 1,
          "Batches of one layer fanning out at once (with --max_batch_tokens > 0)");
ABSL_FLAG(int, batch_stall_ms, 1000,
          "A batch still fanning out after this long (a shard call unanswered, with no replica "
          "to hedge on) stops counting against --batches_in_flight, so its layer's next batch "
          "starts beside it; 0: a batch counts until it ends");
ABSL_FLAG(int, max_queued, -1,
          "Most Forward calls waiting for a place; beyond, RESOURCE_EXHAUSTED at once. A waiting "
          "call is refused (RESOURCE_EXHAUSTED) as soon as its deadline leaves less than twice "
          "what a call of its size takes (recent calls of as many tokens); newest first once the "
          "queue falls behind (a call that can start at once runs, unless its deadline leaves "
          "less than one such call's time: DEADLINE_EXCEEDED). --max_inflight + "
          "--max_queued must be at most --max_threads - 4, so that threads remain to refuse "
          "with. -1: what that leaves (476 with the defaults: a queue deeper than the clients' "
          "concurrency refuses each call once, near its deadline, instead of again and again)");
ABSL_FLAG(int, max_queued_mb, 256,
          "Most MiB of request bytes the queued Forward calls may hold; beyond, RESOURCE_EXHAUSTED "
          "at once (0: no byte bound)");

namespace {

// The largest reply a valid shard can send this router (ShardWireOptions::max_reply_bytes), from
// the model's sizes; 0 (no bound) when config.json cannot be read, which Router::Create reports.
int64_t MaxReplyBytes(const moe::RouterOptions& options) {
  auto checkpoint = moe::Checkpoint::Open(options.model_dir);
  if (!checkpoint.ok()) return 0;
  auto text = (*checkpoint)->ReadConfigText();
  if (!text.ok()) return 0;
  auto config = moe::ParseModelConfig(*text, options.model_dir + "/config.json");
  if (!config.ok()) return 0;
  // A shard call carries one request (at most --max_tokens) or one batch of them.
  const int64_t tokens = std::max(options.max_tokens, options.batching.max_tokens);
  return moe::MaxValidReplyBytes(tokens, config->routing.top_k, config->shared.width > 0,
                                 config->d_model);
}

}  // namespace

int main(int argc, char** argv) {
  moe::UseBestBlasKernels(argv);  // may re-execute: before any thread starts
  moe::KeepFreedMemory();  // before any allocation worth keeping (common/rpc/memory_policy.h)
  moe::BlockShutdownSignals();
  absl::SetProgramUsageMessage(
      "Serves the MoE layers of a model: the gates and the routing here, the experts on shards.\n"
      "  moe_router --model=DIR --shards=TARGET[,TARGET...] | --shards_file=FILE\n"
      "             [--layers=all|SPEC] [--listen=HOST:PORT] [--port_file=FILE]\n"
      "             [--max_tokens=N] [--default_timeout_ms=MS] [--hedging] [--allow_partial]\n"
      "             [--partial_sums=false] [--shard_wire_dtype=f32|bf16]\n"
      "             [--refresh_ms=MS] [--blas_threads=N] [--channels_per_shard=N]\n"
      "             [--tls_cert=PEM --tls_key=PEM [--tls_ca=PEM]] [--info_shows_topology]\n"
      "             [--shard_tls_ca=PEM [--shard_tls_cert=PEM --shard_tls_key=PEM]\n"
      "              [--shard_tls_server_name=NAME]]\n"
      "             [--drain_s=S] [--unread_reply_timeout_s=S]\n"
      "             [--max_threads=N] [--max_inflight=N] [--max_queued=N]\n"
      "             [--max_inflight_tokens=N] [--max_queued_mb=MB]\n"
      "             [--max_batch_tokens=N] [--batch_wait_us=US] [--batches_in_flight=N]\n"
      "             [--batch_stall_ms=MS]\n"
      "             [--metrics_listen=HOST:PORT [--metrics_port_file=FILE]]");
  moe::ParseFlags(argc, argv);
  moe::UseServingMutexes();
  moe::RaiseOpenFileLimitForServer("moe_router");  // common/rpc/open_file_limit.h

  moe::RouterOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model);
  options.layers = absl::GetFlag(FLAGS_layer) >= 0 ? std::to_string(absl::GetFlag(FLAGS_layer))
                                                   : absl::GetFlag(FLAGS_layers);
  const std::string shards_file = absl::GetFlag(FLAGS_shards_file);
  options.shards = absl::GetFlag(FLAGS_shards);
  if (!shards_file.empty()) {
    absl::StatusOr<std::string> listed = moe::ShardsFile::Read(shards_file);
    if (!listed.ok()) {
      std::cerr << "moe_router: --shards_file: " << listed.status().message() << std::endl;
      return 2;
    }
    if (!options.shards.empty()) {
      std::cerr << "moe_router: give --shards or --shards_file, not both" << std::endl;
      return 2;
    }
    options.shards = *listed;
  }
  options.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  options.default_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_default_timeout_ms));
  options.hedging = absl::GetFlag(FLAGS_hedging);
  options.allow_partial = absl::GetFlag(FLAGS_allow_partial);
  options.partial_sums = absl::GetFlag(FLAGS_partial_sums);
  options.batching.max_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  options.batching.max_wait = absl::Microseconds(absl::GetFlag(FLAGS_batch_wait_us));
  options.batching.in_flight = absl::GetFlag(FLAGS_batches_in_flight);
  const int stall_ms = absl::GetFlag(FLAGS_batch_stall_ms);
  options.batching.stalled_after =
      stall_ms == 0 ? absl::InfiniteDuration() : absl::Milliseconds(stall_ms);
  constexpr int64_t kDayMs = 24 * 3600 * 1000;
  const int max_threads = absl::GetFlag(FLAGS_max_threads);
  moe::AdmissionQueueOptions admission;
  admission.max_running = absl::GetFlag(FLAGS_max_inflight);
  admission.max_queued = absl::GetFlag(FLAGS_max_queued);
  if (absl::Status ranges = moe::CheckFlagRanges({
          {"max_tokens", options.max_tokens, 1, 1 << 24},
          {"layer", absl::GetFlag(FLAGS_layer), -1, 65535},
          {"default_timeout_ms", absl::GetFlag(FLAGS_default_timeout_ms), 1, kDayMs},
          {"max_batch_tokens", options.batching.max_tokens, 0, 1 << 20},
          {"batch_wait_us", absl::GetFlag(FLAGS_batch_wait_us), 0, 10'000'000},
          {"batch_stall_ms", stall_ms, 0, kDayMs},
          {"batches_in_flight", options.batching.in_flight, 1, 1024},
          {"refresh_ms", absl::GetFlag(FLAGS_refresh_ms), 10, 3'600'000},
          {"blas_threads", absl::GetFlag(FLAGS_blas_threads), 1, 1024},
          {"channels_per_shard", absl::GetFlag(FLAGS_channels_per_shard), 1, 64},
          {"drain_s", absl::GetFlag(FLAGS_drain_s), 0, 24 * 3600},
          {"unread_reply_timeout_s", absl::GetFlag(FLAGS_unread_reply_timeout_s), 0, 24 * 3600},
          {"max_threads", max_threads, 0, 1 << 16},
          {"max_inflight", admission.max_running, 0, 1 << 16},
          {"max_queued", admission.max_queued, -1, 1 << 20},  // -1: automatic
          {"max_queued_mb", absl::GetFlag(FLAGS_max_queued_mb), 0, 1 << 20},
          {"max_inflight_tokens", absl::GetFlag(FLAGS_max_inflight_tokens), 0, INT32_MAX},
      });
      !ranges.ok()) {
    std::cerr << "moe_router: " << ranges.message() << std::endl;
    return 2;
  }
  if (admission.max_running == 0) {
    admission.max_queued = 0;
  } else if (admission.max_queued == -1) {
    admission.max_queued =
        std::max(max_threads - moe::kReservedServerThreads - admission.max_running, 0);
  }
  admission.max_queued_bytes = int64_t{absl::GetFlag(FLAGS_max_queued_mb)} << 20;
  admission.max_running_tokens = absl::GetFlag(FLAGS_max_inflight_tokens);
  if (absl::Status limits =
          moe::CheckAdmissionLimit(admission.max_running + admission.max_queued, max_threads);
      !limits.ok()) {
    std::cerr << "moe_router: --max_inflight + --max_queued / --max_threads: " << limits.message()
              << std::endl;
    return 2;
  }
  if (absl::Status listen = moe::CheckListenFlag(absl::GetFlag(FLAGS_listen)); !listen.ok()) {
    std::cerr << "moe_router: " << listen.message() << std::endl;
    return 2;
  }
  const std::string wire_dtype = absl::GetFlag(FLAGS_shard_wire_dtype);
  if (wire_dtype != "f32" && wire_dtype != "bf16") {
    std::cerr << "moe_router: --shard_wire_dtype=" << wire_dtype << ": expected f32 or bf16"
              << std::endl;
    return 2;
  }
  moe::ShardWireOptions wire;
  wire.bf16 = wire_dtype == "bf16";
  wire.max_reply_bytes = MaxReplyBytes(options);
  options.directory.refresh_interval = absl::Milliseconds(absl::GetFlag(FLAGS_refresh_ms));
  // Each target's transitions, one line each: "shard 10.0.0.7:50061 SERVING layers 0-15 experts
  // 0-31", "shard ... UNREACHABLE (layers ...): <why>", "shard ... REMOVED (layers ...): no longer
  // listed" (gone from --shards_file).
  options.directory.target_changed = [](const moe::TargetStatus& status) {
    const std::string group =
        status.description ? moe::ShardGroupName(*status.description) : std::string();
    std::string line = absl::StrCat("moe_router: shard ", status.target, " ", status.state);
    if (status.state == "SERVING") {
      absl::StrAppend(&line, " ", group);
    } else {
      if (!group.empty()) absl::StrAppend(&line, " (", group, ")");
      absl::StrAppend(&line, ": ", status.problem);
    }
    std::cerr << line + "\n" << std::flush;
  };
  if (options.model_dir.empty() || (options.shards.empty() && shards_file.empty())) {
    std::cerr << "moe_router: --model and one of --shards or --shards_file are required (see "
                 "--help)"
              << std::endl;
    return 2;
  }
  moe::TlsFiles server_tls;
  server_tls.cert = absl::GetFlag(FLAGS_tls_cert);
  server_tls.key = absl::GetFlag(FLAGS_tls_key);
  server_tls.ca = absl::GetFlag(FLAGS_tls_ca);
  auto server_credentials = moe::MakeServerCredentials(server_tls);
  moe::TlsFiles shard_tls;
  shard_tls.cert = absl::GetFlag(FLAGS_shard_tls_cert);
  shard_tls.key = absl::GetFlag(FLAGS_shard_tls_key);
  shard_tls.ca = absl::GetFlag(FLAGS_shard_tls_ca);
  shard_tls.server_name = absl::GetFlag(FLAGS_shard_tls_server_name);
  shard_tls.flag_prefix = "--shard_tls_";
  auto shard_security = moe::MakeChannelSecurity(shard_tls);
  for (const absl::Status& tls : {server_credentials.status(), shard_security.status()}) {
    if (!tls.ok()) {
      std::cerr << "moe_router: " << tls.message() << std::endl;
      return 2;
    }
  }
  moe::SetBlasThreads(absl::GetFlag(FLAGS_blas_threads));
  // Outlives the router, which registers its metrics here.
  moe::MetricRegistry registry;
  if (!absl::GetFlag(FLAGS_metrics_listen).empty()) options.metrics = &registry;

  const int channels = absl::GetFlag(FLAGS_channels_per_shard);
  auto router = moe::Router::Create(
      options, [channels, wire, &security = *shard_security](const std::string& target) {
        return std::make_unique<moe::GrpcShardClient>(target, channels, security, wire);
      });
  if (!router.ok()) {
    std::cerr << "moe_router: " << router.status().message() << std::endl;
    return 1;
  }
  const moe::ModelConfig& config = (*router)->config();
  std::cerr << "moe_router: " << config.model_type << ", "
            << moe::CountOf((*router)->layers().size(), "layer", "layers") << " ("
            << absl::StrJoin((*router)->layers(), ",") << "), d_model " << config.d_model << ", "
            << config.routing.num_experts << " experts, top-" << config.routing.top_k
            << "; clients: " << moe::ServerTlsMode(server_tls)
            << ", shards: " << moe::ClientTlsMode(shard_tls)
            << "; kernels: " << moe::KernelsReport() << std::endl;

  auto metrics_http = moe::MetricsHttpServer::StartIfConfigured(
      {absl::GetFlag(FLAGS_metrics_listen), absl::GetFlag(FLAGS_metrics_port_file)}, &registry);
  if (!metrics_http.ok()) {
    std::cerr << "moe_router: --metrics_listen: " << metrics_http.status().message() << std::endl;
    return 1;
  }
  std::optional<moe::AdmissionQueue> queue;
  if (admission.max_running > 0) queue.emplace(admission);
  moe::RouterServiceImpl service(router->get(), absl::GetFlag(FLAGS_info_shows_topology),
                                 queue.has_value() ? &*queue : nullptr);
  moe::ServeOptions serve;
  serve.name = "moe_router";
  serve.listen = absl::GetFlag(FLAGS_listen);
  serve.port_file = absl::GetFlag(FLAGS_port_file);
  serve.credentials = *server_credentials;
  // Room for max_tokens tokens of d_model floats plus framing; larger messages are rejected by
  // gRPC with RESOURCE_EXHAUSTED naming the limit.
  serve.max_message_bytes = static_cast<int>(
      std::min<int64_t>(int64_t{options.max_tokens} * config.d_model * 8 + (1 << 20), INT32_MAX));
  serve.max_threads = max_threads;
  serve.unread_reply_timeout = absl::Seconds(absl::GetFlag(FLAGS_unread_reply_timeout_s));
  serve.health_services = {moe::v1::Router::service_full_name()};
  // Health is SERVING only while every expert of every served layer has a serving shard.
  serve.serving_at_start = false;
  serve.call_observers = moe::ForwardCallObservers((*router)->metrics());
  if (moe::RouterMetrics* metrics = (*router)->metrics(); metrics != nullptr) {
    serve.client_wait_cancelled = [metrics](int64_t calls) { metrics->ClientWaitCancelled(calls); };
  }
  auto server = moe::GrpcServer::Start(serve, {&service});
  if (!server.ok()) {
    std::cerr << "moe_router: " << server.status().message() << std::endl;
    return 1;
  }
  (*router)->directory().SetCoverageCallback([server = server->get()](const std::string& gaps) {
    std::cerr << "moe_router: "
              << (gaps.empty() ? "SERVING: every expert of every layer has a serving shard"
                               : "NOT_SERVING: no serving shard holds " + gaps)
              << std::endl;
    for (const std::string& name :
         {std::string(), std::string(moe::v1::Router::service_full_name())}) {
      server->SetServing(name, gaps.empty());
    }
  });
  std::optional<moe::ShardsFile> file;
  if (!shards_file.empty()) {
    file.emplace(shards_file, config.routing.num_experts, config.shared.width > 0);
  }
  (*router)->directory().StartRefreshing(
      file.has_value() ? moe::ShardDirectory::TargetSource([&file] { return file->Changed(); })
                       : nullptr);

  // Requests in flight get --drain_s; then their shard calls are cancelled, so a hung shard
  // cannot hold the exit.
  const int exit_code = moe::DrainOnShutdownSignal(
      **server, absl::Seconds(absl::GetFlag(FLAGS_drain_s)), [&router] { (*router)->CancelAll(); });
  // The refresher reads `file` and the coverage callback uses `server`, both destroyed before
  // the router (which would otherwise stop them only in its destructor).
  (*router)->directory().StopRefreshing();
  (*router)->directory().SetCoverageCallback(nullptr);
  return exit_code;
}
