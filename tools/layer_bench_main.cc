// moe_layer_bench: times one MoE layer, in process or through a running router, and prints one
// JSON line with tokens/s and latency percentiles. scripts/bench runs it to compare deployments.
// In process means the real Router over a LocalShardClient holding every expert (no gRPC, same
// routing, dispatch, shared expert and summation as the service); dense computes every expert
// for every token (what sparse routing saves).
//
// With --layers (all, or a set such as 1-3), each timed unit is a model step: one Forward per
// layer, in sequence, as the attention side of a model makes them (each layer is given the same
// tokens; only the calls' cost matters here), in process or through the router.
//
//   moe_layer_bench --model=DIR --mode=inprocess|dense|remote [--router=TARGET] [--tokens=256]
//   moe_layer_bench --model=DIR --mode=inprocess --layers=all --tokens=1      (a step in process)
//   moe_layer_bench --mode=remote --layers=all --tokens=1                     (a step via router)
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "common/cli/parse_flags.h"
#include "common/kernels/blas_kernels.h"
#include "common/routing/expert_set.h"
#include "common/rpc/memory_policy.h"
#include "expert_service/expert_shard.h"
#include "moe/v1/router.grpc.pb.h"
#include "router_service/local_shard_client.h"
#include "router_service/router.h"

ABSL_FLAG(std::string, model, "",
          "Checkpoint directory (required by the inprocess and dense modes)");
ABSL_FLAG(int, layer, 0, "Layer to run (without --layers)");
ABSL_FLAG(std::string, layers, "",
          "Time model steps instead: one call per layer of this set (all, or e.g. 1-3), in "
          "sequence; inprocess and remote modes");
ABSL_FLAG(std::string, mode, "inprocess",
          "inprocess: the layer in this process; dense: every expert for every token; remote: "
          "Forward calls to --router");
ABSL_FLAG(std::string, router, "127.0.0.1:50051", "Router target for --mode=remote");
ABSL_FLAG(int, tokens, 256, "Tokens per request");
ABSL_FLAG(int, requests, 20, "Timed requests (after 2 warm-up requests)");

namespace {

std::string CodeName(const grpc::Status& status) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()));
}

std::vector<float> Tokens(int64_t n, int64_t d) {
  std::vector<float> values(n * d);
  uint64_t state = 0x2545F4914F6CDD1Dull;
  for (float& v : values) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    v = static_cast<float>(state >> 40) / float(1 << 23) - 1.0f;
  }
  return values;
}

template <typename Fn>
int Time(const std::string& mode, int64_t tokens, size_t step_layers, Fn&& run) {
  std::vector<double> ms;
  for (int i = 0; i < absl::GetFlag(FLAGS_requests) + 2; ++i) {
    const auto start = std::chrono::steady_clock::now();
    if (!run()) return 1;
    const double elapsed =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (i >= 2) ms.push_back(elapsed);
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2];
  // With step_layers > 0 a "request" is a step of that many calls and the times are per step.
  std::printf(
      "{\"mode\": \"%s\", \"tokens\": %lld, \"step_layers\": %zu, \"requests\": %zu, "
      "\"p50_ms\": %.3f, \"p90_ms\": %.3f, \"mean_ms\": %.3f, \"tokens_per_s\": %.1f}\n",
      mode.c_str(), static_cast<long long>(tokens), step_layers, ms.size(), median,
      ms[ms.size() * 9 / 10], std::accumulate(ms.begin(), ms.end(), 0.0) / ms.size(),
      tokens / (median / 1000.0));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  moe::KeepFreedMemory();  // before any allocation worth keeping (common/rpc/memory_policy.h)
  absl::SetProgramUsageMessage(
      "Times one MoE layer in process, densely, or through a router; prints one JSON line.\n"
      "  moe_layer_bench --model=DIR [--mode=inprocess|dense] [--layer=N] [--tokens=N]\n"
      "                  [--requests=N]\n"
      "  moe_layer_bench --mode=remote [--router=HOST:PORT] [--tokens=N] [--requests=N]\n"
      "  moe_layer_bench ... --layers=all|SPEC   (time model steps: one call per layer)");
  moe::ParseFlags(argc, argv);
  const std::string mode = absl::GetFlag(FLAGS_mode);
  const int64_t n = absl::GetFlag(FLAGS_tokens);
  const std::string layers_spec = absl::GetFlag(FLAGS_layers);
  const bool step = !layers_spec.empty();
  if (step && mode == "dense") {
    std::cerr << "moe_layer_bench: --layers (model steps) takes --mode=inprocess or remote"
              << std::endl;
    return 2;
  }

  if (mode == "remote") {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);
    auto stub = moe::v1::Router::NewStub(grpc::CreateCustomChannel(
        absl::GetFlag(FLAGS_router), grpc::InsecureChannelCredentials(), args));
    moe::v1::ModelInfo info;
    {
      grpc::ClientContext context;
      grpc::Status status = stub->Info(&context, moe::v1::InfoRequest(), &info);
      if (!status.ok()) {
        std::cerr << "moe_layer_bench: Info failed: " << CodeName(status) << ": "
                  << status.error_message() << std::endl;
        return 1;
      }
    }
    moe::v1::ForwardRequest request;
    request.mutable_tokens()->add_shape(n);
    request.mutable_tokens()->add_shape(info.d_model());
    const std::vector<float> tokens = Tokens(n, info.d_model());
    request.mutable_tokens()->mutable_values()->Add(tokens.begin(), tokens.end());
    std::vector<int> layers;  // empty: one call per request, without a layer
    if (step) {
      auto served = std::vector<int>(info.layers().begin(), info.layers().end());
      auto wanted = moe::ParseExpertSet(layers_spec == "all" ? "" : layers_spec, 1 << 16, false);
      for (int layer : served) {
        if (layers_spec == "all" ||
            (wanted.ok() && std::count(wanted->ids.begin(), wanted->ids.end(), layer) > 0)) {
          layers.push_back(layer);
        }
      }
      if (layers.empty()) {
        std::cerr << "moe_layer_bench: the router serves none of --layers=" << layers_spec
                  << std::endl;
        return 2;
      }
    }
    auto call = [&](std::optional<int> layer) {
      grpc::ClientContext context;
      moe::v1::ForwardResponse response;
      if (layer.has_value()) request.set_layer(*layer);
      grpc::Status status = stub->Forward(&context, request, &response);
      if (!status.ok()) {
        std::cerr << "moe_layer_bench: Forward failed: " << CodeName(status) << ": "
                  << status.error_message() << std::endl;
      }
      return status.ok();
    };
    return Time(mode, n, layers.size(), [&] {
      if (layers.empty()) return call(std::nullopt);
      for (int layer : layers) {
        if (!call(layer)) return false;
      }
      return true;
    });
  }
  if (mode != "inprocess" && mode != "dense") {
    std::cerr << "moe_layer_bench: --mode must be inprocess, dense or remote" << std::endl;
    return 2;
  }
  if (absl::GetFlag(FLAGS_model).empty()) {
    std::cerr << "moe_layer_bench: --model=DIR is required with --mode=" << mode << " (see --help)"
              << std::endl;
    return 2;
  }
  const std::string model = absl::GetFlag(FLAGS_model);
  const int layer = absl::GetFlag(FLAGS_layer);
  const std::string served = step ? layers_spec : std::to_string(layer);
  auto shard = moe::ExpertShard::Create({model, served, "all"});
  if (!shard.ok()) {
    std::cerr << "moe_layer_bench: " << shard.status().message() << std::endl;
    return 1;
  }
  const moe::ExpertShard& experts = **shard;
  const int64_t d = experts.config().d_model;
  const std::vector<float> tokens = Tokens(n, d);
  const moe::ConstMatrixView input{tokens.data(), n, d};
  moe::Matrix output(n, d);
  if (mode == "dense") {
    moe::Matrix y(n, d);
    return Time(mode, n, 0, [&] {
      for (int e = 0; e < experts.config().routing.num_experts; ++e) {
        absl::Status status = experts.Compute(e, input, y.view());
        if (!status.ok()) {
          std::cerr << "moe_layer_bench: " << status.message() << std::endl;
          return false;
        }
      }
      return true;
    });
  }
  moe::RouterOptions options;
  options.model_dir = model;
  options.layers = served;
  options.shards = "in-process";
  options.max_tokens = static_cast<int>(n);
  moe::ShardDescription description{experts.layers(), experts.experts(), experts.identity()};
  auto router = moe::Router::Create(options, [&](const std::string& target) {
    return std::make_unique<moe::LocalShardClient>(
        target, description,
        [&experts](int layer, int e, moe::ConstMatrixView x, moe::MatrixView y) {
          return experts.Compute(layer, e, x, y);
        });
  });
  if (!router.ok()) {
    std::cerr << "moe_layer_bench: " << router.status().message() << std::endl;
    return 1;
  }
  const std::vector<int> layers = step ? experts.layers() : std::vector<int>{layer};
  return Time(mode, n, step ? layers.size() : 0, [&] {
    for (int l : layers) {
      auto routing = (*router)->Forward(l, input, absl::InfiniteFuture(), output.view());
      if (!routing.ok()) {
        std::cerr << "moe_layer_bench: layer " << l << ": " << routing.status().message()
                  << std::endl;
        return false;
      }
    }
    return true;
  });
}
