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
#include "common/rpc/server_runner.h"
#include "common/rpc/shutdown_signal.h"
#include "common/rpc/tls_credentials.h"
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
ABSL_FLAG(int, default_timeout_ms, 30000, "Deadline for shard calls when the client sets none");
ABSL_FLAG(int, blas_threads, 1, "OpenBLAS threads per call (gate and local shared expert)");
ABSL_FLAG(int, channels_per_shard, 2,
          "gRPC channels (HTTP/2 connections) to each shard target; calls spread over them");
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
          "Info lists each shard group's targets (internal addresses); off by default so the "
          "public API does not reveal them");

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

  const int channels = absl::GetFlag(FLAGS_channels_per_shard);
  auto router = moe::Router::Create(
      options, [channels, &security = *shard_security](const moe::ShardGroup& group) {
        return std::make_unique<moe::GrpcShardClient>(group.targets, channels, security);
      });
  if (!router.ok()) {
    std::cerr << "moe_router: " << router.status().message() << std::endl;
    return 1;
  }
  const moe::ModelConfig& config = (*router)->config();
  std::cerr << "moe_router: " << config.model_type << " layer " << options.layer << ", d_model "
            << config.d_model << ", " << config.routing.num_experts << " experts, top-"
            << config.routing.top_k << ", " << (*router)->shards().groups().size()
            << " shard groups; clients: " << moe::ServerTlsMode(server_tls)
            << ", shards: " << moe::ClientTlsMode(shard_tls) << std::endl;

  moe::RouterServiceImpl service(router->get(), absl::GetFlag(FLAGS_info_shows_topology));
  moe::ServeOptions serve;
  serve.name = "moe_router";
  serve.listen = absl::GetFlag(FLAGS_listen);
  serve.port_file = absl::GetFlag(FLAGS_port_file);
  serve.credentials = *server_credentials;
  // Room for max_tokens tokens of d_model floats plus framing; larger messages are rejected by
  // gRPC with RESOURCE_EXHAUSTED naming the limit.
  serve.max_message_bytes = static_cast<int>(
      std::min<int64_t>(int64_t{options.max_tokens} * config.d_model * 8 + (1 << 20), INT32_MAX));
  absl::Status served = moe::ServeUntilSignal(serve, {&service});
  if (!served.ok()) {
    std::cerr << "moe_router: " << served.message() << std::endl;
    return 1;
  }
  return 0;
}
