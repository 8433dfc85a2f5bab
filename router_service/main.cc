// moe_router: serves one MoE layer (moe.v1.Router): gate and routing here, experts on shards.
//
//   moe_router --model=DIR --layer=N --shards=SPEC@TARGET[,SPEC@TARGET...] --listen=HOST:PORT
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/kernels/blas_kernels.h"
#include "common/routing/expert_set.h"
#include "common/rpc/admission_gate.h"
#include "common/rpc/server_runner.h"
#include "common/rpc/shutdown_signal.h"
#include "router_service/grpc_shard_client.h"
#include "router_service/router.h"
#include "router_service/router_service.h"

ABSL_FLAG(std::string, model, "", "Hugging Face checkpoint directory (config.json + safetensors)");
ABSL_FLAG(int, layer, 0, "Layer whose MoE block to serve");
ABSL_FLAG(std::string, shards, "",
          "Expert shards: SPEC@TARGET[,SPEC@TARGET...], e.g. 0-3@127.0.0.1:50061,"
          "4-7@dns:///expert-1:50061. The same SPEC twice means two replicas; 'shared' places "
          "the shared expert on a shard");
ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "Address to serve on (port 0 picks a free port)");
ABSL_FLAG(std::string, port_file, "", "If set, write the bound port to this file once serving");
ABSL_FLAG(int, max_tokens, 8192, "Most tokens accepted in one request");
ABSL_FLAG(int, default_timeout_ms, 30000,
          "Deadline of a request whose client set none (a client deadline is used as it is)");
ABSL_FLAG(int, blas_threads, 1, "OpenBLAS threads per call (gate and local shared expert)");
ABSL_FLAG(int, channels_per_shard, 2,
          "gRPC channels (HTTP/2 connections) to each shard target; calls spread over them");

ABSL_FLAG(int, drain_s, 5,
          "On SIGTERM or SIGINT: health NOT_SERVING at once, no new calls, calls in flight get "
          "this many seconds to finish (then they are cancelled), then exit");
ABSL_FLAG(int, max_threads, 64,
          "Most gRPC server threads (handlers and pollers); 0 = unbounded (with --max_inflight=0)");
ABSL_FLAG(int, max_inflight, 48,
          "Most calls served at once; more are refused at once with RESOURCE_EXHAUSTED. At most "
          "--max_threads - 4, so that threads remain to refuse with");

int main(int argc, char** argv) {
  moe::BlockShutdownSignals();
  absl::SetProgramUsageMessage(
      "Serves one MoE layer, fanning expert work out to shards.\n"
      "  moe_router --model=DIR --layer=N --shards=SPEC@TARGET[,...] --listen=HOST:PORT");
  absl::ParseCommandLine(argc, argv);

  moe::RouterOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model);
  options.layer = absl::GetFlag(FLAGS_layer);
  options.shards = absl::GetFlag(FLAGS_shards);
  options.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  options.default_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_default_timeout_ms));
  if (options.model_dir.empty() || options.shards.empty()) {
    std::cerr << "moe_router: --model and --shards are required (see --help)" << std::endl;
    return 2;
  }
  moe::SetBlasThreads(absl::GetFlag(FLAGS_blas_threads));

  const int channels = absl::GetFlag(FLAGS_channels_per_shard);
  auto router = moe::Router::Create(options, [channels](const moe::ShardGroup& group) {
    return std::make_unique<moe::GrpcShardClient>(group.targets, channels);
  });
  if (!router.ok()) {
    std::cerr << "moe_router: " << router.status().message() << std::endl;
    return 1;
  }
  const moe::ModelConfig& config = (*router)->config();
  std::cerr << "moe_router: " << config.model_type << " layer " << options.layer << ", d_model "
            << config.d_model << ", " << config.routing.num_experts << " experts, top-"
            << config.routing.top_k << ", " << (*router)->shards().groups().size()
            << " shard groups" << std::endl;

  const int max_threads = absl::GetFlag(FLAGS_max_threads);
  const int max_inflight = absl::GetFlag(FLAGS_max_inflight);
  if (absl::Status limits = moe::CheckAdmissionLimit(max_inflight, max_threads); !limits.ok()) {
    std::cerr << "moe_router: --max_inflight / --max_threads: " << limits.message() << std::endl;
    return 2;
  }
  moe::AdmissionGate gate(max_inflight);
  moe::RouterServiceImpl service(router->get(), &gate);
  moe::ServeOptions serve;
  serve.name = "moe_router";
  serve.listen = absl::GetFlag(FLAGS_listen);
  serve.port_file = absl::GetFlag(FLAGS_port_file);
  // Room for max_tokens tokens of d_model floats plus framing; larger messages are rejected by
  // gRPC with RESOURCE_EXHAUSTED naming the limit.
  serve.max_message_bytes = static_cast<int>(
      std::min<int64_t>(int64_t{options.max_tokens} * config.d_model * 8 + (1 << 20), INT32_MAX));
  serve.max_threads = max_threads;
  serve.health_services = {moe::v1::Router::service_full_name()};
  auto server = moe::GrpcServer::Start(serve, {&service});
  if (!server.ok()) {
    std::cerr << "moe_router: " << server.status().message() << std::endl;
    return 1;
  }
  return moe::DrainOnShutdownSignal(**server, absl::Seconds(absl::GetFlag(FLAGS_drain_s)));
}
