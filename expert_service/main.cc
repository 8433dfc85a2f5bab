// moe_expert: serves some experts of every MoE layer it is given over gRPC (moe.v1.Expert).
//
//   moe_expert --model=DIR --layers=all --experts=SPEC --listen=HOST:PORT
#include <algorithm>
#include <cstdint>
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/cli/flag_ranges.h"
#include "common/cli/human_units.h"
#include "common/cli/parse_flags.h"
#include "common/cli/serving_mutexes.h"
#include "common/kernels/blas_kernels.h"
#include "common/kernels/cpu_affinity.h"
#include "common/kernels/swiglu_ffn.h"
#include "common/metrics/metric_registry.h"
#include "common/metrics/metrics_http_server.h"
#include "common/rpc/admission_gate.h"
#include "common/rpc/listen_port.h"
#include "common/rpc/memory_policy.h"
#include "common/rpc/open_file_limit.h"
#include "common/rpc/server_runner.h"
#include "common/rpc/shutdown_signal.h"
#include "common/rpc/tls_credentials.h"
#include "expert_service/compute_bounds.h"
#include "expert_service/expert_service.h"
#include "expert_service/expert_shard.h"

ABSL_FLAG(std::string, model, "",
          "Required: Hugging Face checkpoint directory (config.json + safetensors)");
ABSL_FLAG(std::string, layers, "all",
          "MoE layers whose experts to hold: all (dense layers skipped), or e.g. 3, 1-15, 1,3,5");
ABSL_FLAG(int, layer, -1, "Same as --layers=N (kept for compatibility); -1: use --layers");
ABSL_FLAG(std::string, experts, "",
          "Required: experts to hold, 0-3 | 0,2,5 | all; add 'shared' for the shared expert");
ABSL_FLAG(std::string, listen, "0.0.0.0:50061", "Address to serve on (port 0 picks a free port)");
ABSL_FLAG(std::string, port_file, "", "If set, write the bound port to this file once serving");
ABSL_FLAG(std::string, weights_dtype, "f32",
          "Expert weights in memory: f32; bf16 (half the bytes: small batches, bound by memory "
          "bandwidth, run up to 2x faster; f32 checkpoints are rounded to nearest bf16; on CPUs "
          "with AVX512-BF16, calls of 16+ tokens round activations to bf16 too, ~1.9x faster); "
          "or int8 (opt-in, a quarter of the bytes: quantised on load, one scale per output row; "
          "outputs move about 1% from f32, see README). The MOE_KERNELS environment "
          "variable caps the kernels: auto|avx512bf16|avx512|portable; MOE_ONE_TOKEN_STREAMS=1|4 "
          "sets the weight streams a thread reads at once for one token (default: 1 on AMD CPUs "
          "with AVX-512, 4 on others)");
ABSL_FLAG(int, kernel_threads, 0,
          "Threads of the small-batch FFN kernel per call; 0 = every CPU this process may use, "
          "also when several "
          "shards share one machine (a shard with work then streams on the cores the others "
          "leave idle)");
ABSL_FLAG(bool, pin_kernel_threads, false,
          "Pin the kernel pool's helper threads one per CPU, where --kernel_threads is one per "
          "CPU this process may use (taskset or a container's cpuset says which); the calling "
          "thread stays free. With shards sharing cores: one-token requests ~5% faster, "
          "256-token bf16 ones ~4% slower (README)");
ABSL_FLAG(int, blas_threads, 0,
          "OpenBLAS threads per large-batch FFN call; 0 = every CPU this process may use");
ABSL_FLAG(int, max_message_mb, 0,
          "Largest request or reply accepted, in MiB; 0: what --max_tokens_per_call rows of "
          "d_model floats take (plus row indices and 1 MiB of framing)");
ABSL_FLAG(int64_t, max_tokens_per_call, 0,
          "Most token rows (across expert groups) one Compute call may ask for; larger calls are "
          "refused before computing. 0: what a router with --max_tokens=8192 can send: 8192 x "
          "(min(top_k, experts held) + 1 if the shared expert is held)");
ABSL_FLAG(int, max_batch_tokens, 256,
          "Cross-request batching: calls for a busy expert join its next FFN call, up to this "
          "many tokens; 0 turns batching off");
ABSL_FLAG(int, max_connection_age_s, 0,
          "Close each client connection after this many seconds (10 s grace), so routers "
          "re-resolve dns:/// targets and reach new replicas; 0: never");
ABSL_FLAG(int, concurrent_ffn, 1,
          "Expert FFN calls computed at once (each uses --blas_threads/--kernel_threads cores; "
          "a call's groups run one per kernel thread count 1/--kernel_threads each); others "
          "queue and their batches grow. 0: unlimited");
ABSL_FLAG(int, batch_wait_us, 0,
          "How long an idle expert lingers for more tokens before computing (0: never waits)");
ABSL_FLAG(std::string, tls_cert, "",
          "Serve TLS with this PEM certificate chain (with --tls_key); default: plaintext");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_ca, "",
          "Mutual TLS: callers (routers) must present a certificate signed by this PEM CA");

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
ABSL_FLAG(int, max_threads, 64,
          "Most gRPC server threads (handlers and pollers; a thread whose call finished waits for "
          "the next); 0 = unbounded (with --max_inflight=0)");
ABSL_FLAG(int, max_inflight, 48,
          "Most calls served at once; more are refused at once with RESOURCE_EXHAUSTED. At most "
          "--max_threads - 4, so that threads remain to refuse with");

namespace {

// "helpers pinned to CPUs 1,2,3" or "not pinned": cpus[0] is the caller's, which stays free.
std::string PinnedHelpers(const std::vector<int>& cpus) {
  if (cpus.size() < 2) return "not pinned";
  return absl::StrCat(cpus.size() == 2 ? "helper pinned to CPU " : "helpers pinned to CPUs ",
                      absl::StrJoin(cpus.begin() + 1, cpus.end(), ","));
}

}  // namespace

int main(int argc, char** argv) {
  moe::UseBestBlasKernels(argv);  // may re-execute: before any thread starts
  moe::KeepFreedMemory();  // before any allocation worth keeping (common/rpc/memory_policy.h)
  moe::BlockShutdownSignals();
  absl::SetProgramUsageMessage(
      "Serves some experts of the MoE layers of a model.\n"
      "  moe_expert --model=DIR --experts=SPEC [--layers=all|SPEC] [--listen=HOST:PORT]\n"
      "             [--port_file=FILE] [--weights_dtype=f32|bf16|int8] [--kernel_threads=N]\n"
      "             [--pin_kernel_threads] [--blas_threads=N] [--concurrent_ffn=N]\n"
      "             [--max_batch_tokens=N] [--batch_wait_us=US] [--max_message_mb=MB]\n"
      "             [--max_tokens_per_call=N] [--max_connection_age_s=S]\n"
      "             [--layer=N] [--tls_cert=PEM --tls_key=PEM [--tls_ca=PEM]]\n"
      "             [--drain_s=S] [--unread_reply_timeout_s=S]\n"
      "             [--max_threads=N] [--max_inflight=N]\n"
      "             [--metrics_listen=HOST:PORT [--metrics_port_file=FILE]]");
  moe::ParseFlags(argc, argv);
  moe::UseServingMutexes();
  moe::RaiseOpenFileLimitForServer("moe_expert");  // common/rpc/open_file_limit.h

  moe::ExpertShardOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model);
  options.layers = absl::GetFlag(FLAGS_layer) >= 0 ? std::to_string(absl::GetFlag(FLAGS_layer))
                                                   : absl::GetFlag(FLAGS_layers);
  options.experts_spec = absl::GetFlag(FLAGS_experts);
  if (options.model_dir.empty() || options.experts_spec.empty()) {
    std::cerr << "moe_expert: --model and --experts are required (see --help)" << std::endl;
    return 2;
  }
  // Before the weights load, so a bad value is refused at once. gRPC's message limit is an int
  // of bytes (--max_message_mb < 2048).
  const int max_message_mb = absl::GetFlag(FLAGS_max_message_mb);
  const int max_threads = absl::GetFlag(FLAGS_max_threads);
  const int max_inflight = absl::GetFlag(FLAGS_max_inflight);
  if (absl::Status ranges = moe::CheckFlagRanges({
          {"max_message_mb", max_message_mb, 0, 2047},
          {"kernel_threads", absl::GetFlag(FLAGS_kernel_threads), 0, 1024},
          {"blas_threads", absl::GetFlag(FLAGS_blas_threads), 0, 1024},
          {"max_tokens_per_call", absl::GetFlag(FLAGS_max_tokens_per_call), 0, 1 << 24},
          {"max_batch_tokens", absl::GetFlag(FLAGS_max_batch_tokens), 0, 1 << 20},
          // gRPC takes the age as an int of milliseconds: 24.8 days at most.
          {"max_connection_age_s", absl::GetFlag(FLAGS_max_connection_age_s), 0, INT32_MAX / 1000},
          {"layer", absl::GetFlag(FLAGS_layer), -1, 65535},
          {"concurrent_ffn", absl::GetFlag(FLAGS_concurrent_ffn), 0, 1024},
          {"batch_wait_us", absl::GetFlag(FLAGS_batch_wait_us), 0, 10'000'000},
          {"drain_s", absl::GetFlag(FLAGS_drain_s), 0, 24 * 3600},
          {"unread_reply_timeout_s", absl::GetFlag(FLAGS_unread_reply_timeout_s), 0, 24 * 3600},
          {"max_threads", max_threads, 0, 1 << 16},
          {"max_inflight", max_inflight, 0, 1 << 16},
      });
      !ranges.ok()) {
    std::cerr << "moe_expert: " << ranges.message() << std::endl;
    return 2;
  }
  if (absl::Status limits = moe::CheckAdmissionLimit(max_inflight, max_threads); !limits.ok()) {
    std::cerr << "moe_expert: --max_inflight / --max_threads: " << limits.message() << std::endl;
    return 2;
  }
  if (absl::Status listen = moe::CheckListenFlag(absl::GetFlag(FLAGS_listen)); !listen.ok()) {
    std::cerr << "moe_expert: " << listen.message() << std::endl;
    return 2;
  }
  const absl::StatusOr<moe::WeightStorage> storage =
      moe::ParseWeightStorage(absl::GetFlag(FLAGS_weights_dtype));
  if (!storage.ok()) {
    std::cerr << "moe_expert: " << storage.status().message() << std::endl;
    return 2;
  }
  options.weight_storage = *storage;
  moe::TlsFiles tls;
  tls.cert = absl::GetFlag(FLAGS_tls_cert);
  tls.key = absl::GetFlag(FLAGS_tls_key);
  tls.ca = absl::GetFlag(FLAGS_tls_ca);
  auto credentials = moe::MakeServerCredentials(tls);
  if (!credentials.ok()) {
    std::cerr << "moe_expert: " << credentials.status().message() << std::endl;
    return 2;
  }
  // One FFN call at a time (--concurrent_ffn) using every core is the default policy: small
  // batches are bound by memory bandwidth, which all cores together saturate; a call of many
  // expert groups runs them one per kernel thread instead (ExpertShard::RunAcrossThreads).
  options.kernel_threads = absl::GetFlag(FLAGS_kernel_threads);  // 0: every core
  options.pin_kernel_threads = absl::GetFlag(FLAGS_pin_kernel_threads);
  // OpenBLAS's thread count is process-wide (common/kernels/blas_kernels.h): set here, once.
  // As the kernel threads: every CPU this process may use (taskset, a container's cpuset).
  const int cores = std::max(1, static_cast<int>(moe::AllowedCpus().size()));
  const int blas_threads = absl::GetFlag(FLAGS_blas_threads);
  moe::SetBlasThreads(blas_threads > 0 ? blas_threads : cores);

  const absl::StatusOr<std::string> kernels = moe::SwigluKernelSummary(options.weight_storage);
  if (!kernels.ok()) {
    std::cerr << "moe_expert: " << kernels.status().message() << std::endl;
    return 2;
  }
  auto shard = moe::ExpertShard::Create(options);
  if (!shard.ok()) {
    std::cerr << "moe_expert: " << shard.status().message() << std::endl;
    return 1;
  }
  moe::ReleaseFreedMemory();  // the loading temporaries (common/rpc/memory_policy.h)
  std::cerr << "moe_expert: " << moe::CountOf((*shard)->layers().size(), "layer", "layers") << " ("
            << absl::StrJoin((*shard)->layers(), ",") << "), experts "
            << moe::FormatExpertSet((*shard)->experts()) << ", "
            << moe::FormatBytes((*shard)->weight_bytes()) << " of "
            << absl::GetFlag(FLAGS_weights_dtype) << " weights; " << moe::ServerTlsMode(tls)
            << "; kernels: " << moe::KernelsReport() << " on "
            << moe::CountOf((*shard)->kernel_threads(), "thread", "threads") << " (" << *kernels
            << "; " << PinnedHelpers((*shard)->kernel_cpus()) << ")" << std::endl;

  moe::BatchingOptions batching;
  batching.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  batching.max_wait = absl::Microseconds(absl::GetFlag(FLAGS_batch_wait_us));
  batching.concurrent_ffn = absl::GetFlag(FLAGS_concurrent_ffn);
  moe::MetricRegistry registry;
  std::unique_ptr<moe::ExpertMetrics> metrics;
  if (!absl::GetFlag(FLAGS_metrics_listen).empty()) {
    auto created = moe::ExpertMetrics::Create(&registry, **shard);
    if (!created.ok()) {
      std::cerr << "moe_expert: metrics: " << created.status().message() << std::endl;
      return 1;
    }
    metrics = std::move(*created);
  }
  auto metrics_http = moe::MetricsHttpServer::StartIfConfigured(
      {absl::GetFlag(FLAGS_metrics_listen), absl::GetFlag(FLAGS_metrics_port_file)}, &registry);
  if (!metrics_http.ok()) {
    std::cerr << "moe_expert: --metrics_listen: " << metrics_http.status().message() << std::endl;
    return 1;
  }
  moe::AdmissionGate gate(max_inflight);
  const int64_t max_rows = absl::GetFlag(FLAGS_max_tokens_per_call) > 0
                               ? absl::GetFlag(FLAGS_max_tokens_per_call)
                               : moe::DefaultMaxRowsPerCall(**shard, 8192);
  moe::ExpertServiceImpl service(shard->get(), batching, &gate, max_rows, metrics.get());
  moe::ServeOptions serve;
  serve.name = "moe_expert";
  serve.listen = absl::GetFlag(FLAGS_listen);
  serve.port_file = absl::GetFlag(FLAGS_port_file);
  serve.credentials = *credentials;
  serve.max_message_bytes = max_message_mb > 0
                                ? max_message_mb << 20
                                : static_cast<int>(moe::MessageBytesForRows(**shard, max_rows));
  serve.max_connection_age = absl::Seconds(absl::GetFlag(FLAGS_max_connection_age_s));
  serve.max_threads = max_threads;
  serve.unread_reply_timeout = absl::Seconds(absl::GetFlag(FLAGS_unread_reply_timeout_s));
  serve.health_services = {moe::v1::Expert::service_full_name()};
  serve.call_observers = moe::ComputeCallObservers(metrics.get());
  if (metrics != nullptr) {
    serve.client_wait_cancelled = [cells = metrics.get()](int64_t calls) {
      cells->ClientWaitCancelled(calls);
    };
  }
  auto server = moe::GrpcServer::Start(serve, {&service});
  if (!server.ok()) {
    std::cerr << "moe_expert: " << server.status().message() << std::endl;
    return 1;
  }
  return moe::DrainOnShutdownSignal(**server, absl::Seconds(absl::GetFlag(FLAGS_drain_s)));
}
