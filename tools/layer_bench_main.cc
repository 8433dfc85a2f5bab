// moe_layer_bench: times one MoE layer, in process or through a running router, and prints one
// JSON line with tokens/s, latency percentiles and this process's CPU time per request (in
// process: the layer's whole cost; remote: the client's share). scripts/bench runs it to compare
// deployments. In process means the real Router over a LocalShardClient holding every expert (no
// gRPC, same routing, dispatch, shared expert and summation as the service); dense computes every
// expert for every token (what sparse routing saves).
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
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/cli/flag_ranges.h"
#include "common/cli/parse_flags.h"
#include "common/cli/serving_mutexes.h"
#include "common/kernels/blas_kernels.h"
#include "common/kernels/cpu_affinity.h"
#include "common/kernels/swiglu_ffn.h"
#include "common/routing/expert_set.h"
#include "common/rpc/memory_policy.h"
#include "common/rpc/tensor_proto.h"
#include "common/rpc/tls_credentials.h"
#include "expert_service/expert_shard.h"
#include "moe/v1/router.grpc.pb.h"
#include "router_service/local_shard_client.h"
#include "router_service/router.h"
#include "tools/client_tls_flags.h"
#include "tools/layer_bench_timing.h"

ABSL_FLAG(std::string, model, "",
          "Checkpoint directory (required by the inprocess and dense modes)");
ABSL_FLAG(int, layer, -1,
          "Layer to run (without --layers); -1: the one layer served (remote: the router's only "
          "layer, as moe_client; inprocess and dense: layer 0)");
ABSL_FLAG(std::string, layers, "",
          "Time model steps instead: one call per layer of this set (all, or e.g. 1-3), in "
          "sequence; inprocess and remote modes");
ABSL_FLAG(std::string, mode, "inprocess",
          "inprocess: the layer in this process; dense: every expert for every token; remote: "
          "Forward calls to --router");
ABSL_FLAG(std::string, router, "127.0.0.1:50051", "Router target for --mode=remote");
ABSL_FLAG(std::string, encoding, "f32",
          "--mode=remote: how the tokens travel, as moe_client's --encoding: f32 (f32_data bytes, "
          "answered in bytes: what scripts/loadtest sends), values (repeated float) or bf16 "
          "(rounds the tokens)");
ABSL_FLAG(std::string, tokens, "256",
          "Tokens per request; a list (1,256) times each count in turn, one JSON line each");
ABSL_FLAG(int, requests, 20,
          "Timed requests per token count and round (after --warmup_requests untimed ones)");
ABSL_FLAG(int, warmup_requests, 2, "Untimed requests before the timed ones, per count and round");
ABSL_FLAG(double, timed_seconds, 0,
          "Time more requests than --requests until this long has passed, per count and round "
          "(one token's 16 requests take tens of milliseconds, within one swing of a host's read "
          "rate)");
ABSL_FLAG(double, warmup_seconds, 0,
          "... and go on warming up until this long has passed (a new client process's first few "
          "dozen requests through a router run slower than a long-lived client's: README \"Real "
          "layer shapes\")");
ABSL_FLAG(int, rounds, 1,
          "Rounds over the token counts, alternating them (the model is loaded once); each "
          "line's figures are over every round's requests");
ABSL_FLAG(int, distinct_inputs, 1,
          "Cycle through this many different token sets, so that consecutive requests choose "
          "different experts (a layer whose chosen experts would fit in the cache otherwise "
          "measures the cache, not memory)");
ABSL_FLAG(std::string, weights_dtype, "f32",
          "inprocess and dense modes: expert weights in memory, f32, bf16 or int8 (as moe_expert's "
          "--weights_dtype)");
ABSL_FLAG(int, kernel_threads, 0,
          "inprocess and dense modes: threads of the FFN kernel; 0 = every core (as moe_expert)");
ABSL_FLAG(bool, pin_kernel_threads, false,
          "inprocess and dense modes: pin the FFN kernel's helper threads (as moe_expert)");
ABSL_FLAG(int, blas_threads, 0,
          "inprocess and dense modes: OpenBLAS threads; 0 = every core (as moe_expert) where the "
          "experts' FFN calls can run on OpenBLAS, else 1 (the gate alone uses it then, as in "
          "moe_router)");

namespace {

// The token sets of every count are all held at once: refused above 8 GiB (a typo such as
// --tokens=4294967297 ended in bad_alloc).
bool TokenSetsFit(const std::vector<int64_t>& counts, int sets, int64_t d) {
  double bytes = 0;
  for (int64_t n : counts) bytes += static_cast<double>(n) * sets * d * sizeof(float);
  if (bytes <= static_cast<double>(int64_t{8} << 30)) return true;
  std::cerr << "moe_layer_bench: --tokens=" << absl::GetFlag(FLAGS_tokens)
            << " --distinct_inputs=" << sets << " of d_model " << d << " need "
            << absl::StrFormat("%.1f", bytes / (1 << 30))
            << " GiB of tokens; at most 8 GiB: fewer tokens or distinct inputs" << std::endl;
  return false;
}

// TimingOptions from the flags.
moe::TimingOptions TimingFlags() {
  moe::TimingOptions options;
  options.rounds = absl::GetFlag(FLAGS_rounds);
  options.requests = absl::GetFlag(FLAGS_requests);
  options.timed_seconds = absl::GetFlag(FLAGS_timed_seconds);
  options.warmup_requests = absl::GetFlag(FLAGS_warmup_requests);
  options.warmup_seconds = absl::GetFlag(FLAGS_warmup_seconds);
  return options;
}

}  // namespace

int main(int argc, char** argv) {
  moe::UseBestBlasKernels(argv);
  moe::KeepFreedMemory();  // before any allocation worth keeping (common/rpc/memory_policy.h)
  absl::SetProgramUsageMessage(
      "Times one MoE layer in process, densely, or through a router; prints a JSON line per token "
      "count.\n"
      "  moe_layer_bench --model=DIR [--mode=inprocess|dense] [--layer=N] [--tokens=N[,N...]]\n"
      "                  [--requests=N] [--rounds=N] [--distinct_inputs=N]\n"
      "                  [--warmup_requests=N] [--warmup_seconds=S] [--timed_seconds=S]\n"
      "                  [--weights_dtype=f32|bf16|int8]\n"
      "                  [--kernel_threads=N] [--pin_kernel_threads] [--blas_threads=N]\n"
      "  moe_layer_bench --mode=remote [--router=HOST:PORT] [--layer=N] [--tokens=N]\n"
      "                  [--requests=N]\n"
      "                  [--encoding=f32|values|bf16]\n"
      "                  [--tls_ca=PEM [--tls_cert=PEM --tls_key=PEM] [--tls_server_name=NAME]]\n"
      "  moe_layer_bench ... --layers=all|SPEC   (time model steps: one call per layer)");
  moe::ParseFlags(argc, argv);
  moe::UseServingMutexes();
  const std::string mode = absl::GetFlag(FLAGS_mode);
  std::vector<int64_t> token_counts;
  for (absl::string_view count : absl::StrSplit(absl::GetFlag(FLAGS_tokens), ',')) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(count, &n) || n < 1 || n > (1 << 24)) {
      std::cerr << "moe_layer_bench: --tokens must be counts from 1 to 16777216 (the router's "
                   "--max_tokens range) separated by commas, got "
                << absl::GetFlag(FLAGS_tokens) << std::endl;
      return 2;
    }
    token_counts.push_back(n);
  }
  if (absl::Status ranges =
          moe::CheckFlagRanges({{"distinct_inputs", absl::GetFlag(FLAGS_distinct_inputs), 1, 4096},
                                {"layer", absl::GetFlag(FLAGS_layer), -1, (1 << 16) - 1}});
      !ranges.ok()) {
    std::cerr << "moe_layer_bench: " << ranges.message() << std::endl;
    return 2;
  }
  if (absl::GetFlag(FLAGS_requests) < 1 || absl::GetFlag(FLAGS_warmup_requests) < 0 ||
      !(absl::GetFlag(FLAGS_warmup_seconds) >= 0 && absl::GetFlag(FLAGS_warmup_seconds) <= 3600) ||
      !(absl::GetFlag(FLAGS_timed_seconds) >= 0 && absl::GetFlag(FLAGS_timed_seconds) <= 3600)) {
    std::cerr << "moe_layer_bench: --requests must be at least 1, --warmup_requests at least 0 "
                 "and --warmup_seconds and --timed_seconds from 0 to 3600; got "
              << absl::GetFlag(FLAGS_requests) << ", " << absl::GetFlag(FLAGS_warmup_requests)
              << ", " << absl::GetFlag(FLAGS_warmup_seconds) << ", "
              << absl::GetFlag(FLAGS_timed_seconds) << std::endl;
    return 2;
  }
  const int64_t max_tokens = *std::max_element(token_counts.begin(), token_counts.end());
  const std::string layers_spec = absl::GetFlag(FLAGS_layers);
  const bool step = !layers_spec.empty();
  const int sets = absl::GetFlag(FLAGS_distinct_inputs);
  int next_set = 0;  // the token set of the next request
  if (step && mode == "dense") {
    std::cerr << "moe_layer_bench: --layers (model steps) takes --mode=inprocess or remote"
              << std::endl;
    return 2;
  }

  if (mode == "remote") {
    const absl::StatusOr<moe::TensorEncoding> encoding =
        moe::ParseEncodingName(absl::GetFlag(FLAGS_encoding));
    if (!encoding.ok()) {
      std::cerr << "moe_layer_bench: " << encoding.status().message() << std::endl;
      return 2;
    }
    auto security = moe::MakeChannelSecurity(moe::ClientTlsFlags());
    if (!security.ok()) {
      std::cerr << "moe_layer_bench: " << security.status().message() << std::endl;
      return 2;
    }
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);
    security->Apply(&args);
    auto stub = moe::v1::Router::NewStub(
        grpc::CreateCustomChannel(absl::GetFlag(FLAGS_router), security->credentials, args));
    moe::v1::ModelInfo info;
    {
      grpc::ClientContext context;
      grpc::Status status = stub->Info(&context, moe::v1::InfoRequest(), &info);
      if (!status.ok()) {
        std::cerr << "moe_layer_bench: Info failed: " << moe::DescribeCallFailure(status)
                  << std::endl;
        return 1;
      }
    }
    if (!TokenSetsFit(token_counts, sets, info.d_model())) return 2;
    std::map<int64_t, std::vector<moe::v1::ForwardRequest>> requests;  // by token count
    for (int64_t n : token_counts) {
      requests[n].resize(sets);
      for (int set = 0; set < sets; ++set) {
        const std::vector<float> tokens = moe::BenchTokens(n, info.d_model(), set);
        moe::WriteProtoTensor(moe::ConstMatrixView{tokens.data(), n, info.d_model()}, *encoding,
                              requests[n][set].mutable_tokens());
      }
    }
    // Without --layers, one call per request, for --layer or (without it) with no layer set: the
    // router then computes its one layer, or refuses naming the layers it serves.
    const std::optional<int> layer = absl::GetFlag(FLAGS_layer) >= 0
                                         ? std::optional<int>(absl::GetFlag(FLAGS_layer))
                                         : std::nullopt;
    std::vector<int> layers;  // with --layers: the ones served, called in sequence
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
    auto call = [&](int64_t n, std::optional<int> layer) {
      grpc::ClientContext context;
      moe::v1::ForwardResponse response;
      moe::v1::ForwardRequest& request = requests[n][next_set];
      if (layer.has_value()) request.set_layer(*layer);
      grpc::Status status = stub->Forward(&context, request, &response);
      if (!status.ok()) {
        std::cerr << "moe_layer_bench: Forward failed: " << moe::DescribeCallFailure(status)
                  << std::endl;
      }
      return status.ok();
    };
    return moe::TimeTokenCounts(mode, token_counts, layers.size(), TimingFlags(), [&](int64_t n) {
      bool ok = true;
      if (layers.empty()) ok = call(n, layer);
      for (size_t i = 0; ok && i < layers.size(); ++i) ok = call(n, layers[i]);
      next_set = (next_set + 1) % sets;
      return ok;
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
  // In process the bench loads the layer itself: -1 keeps the layer it always loaded, 0.
  const int layer = std::max(0, absl::GetFlag(FLAGS_layer));
  const std::string served = step ? layers_spec : std::to_string(layer);
  const absl::StatusOr<moe::WeightStorage> storage =
      moe::ParseWeightStorage(absl::GetFlag(FLAGS_weights_dtype));
  if (!storage.ok()) {
    std::cerr << "moe_layer_bench: " << storage.status().message() << std::endl;
    return 2;
  }
  moe::ExpertShardOptions shard_options{model, served, "all"};
  shard_options.weight_storage = *storage;
  shard_options.kernel_threads = absl::GetFlag(FLAGS_kernel_threads);
  shard_options.pin_kernel_threads = absl::GetFlag(FLAGS_pin_kernel_threads);
  const int cores = std::max(1, static_cast<int>(moe::AllowedCpus().size()));  // as moe_expert
  // An OpenBLAS thread spins for ~0.1 s after each call it served, on a core the experts'
  // kernels use: with bf16 weights on AVX512-BF16 only the gate calls OpenBLAS, on one thread.
  const bool ffn_blas =
      !(shard_options.weight_storage == moe::WeightStorage::kBF16 &&
        moe::SwigluBf16DotMinTokens() > 0) &&
      moe::SwigluBlasMinTokens(shard_options.weight_storage) != moe::kSwigluNeverBlas;
  moe::SetBlasThreads(absl::GetFlag(FLAGS_blas_threads) > 0 ? absl::GetFlag(FLAGS_blas_threads)
                      : ffn_blas                            ? cores
                                                            : 1);
  auto shard = moe::ExpertShard::Create(shard_options);
  if (!shard.ok()) {
    std::cerr << "moe_layer_bench: " << shard.status().message() << std::endl;
    return 1;
  }
  const moe::ExpertShard& experts = **shard;
  const int64_t d = experts.config().d_model;
  // Every expert computes one token before anything is timed, so the timed requests read weights
  // a serving shard has read before: on the PVM Zen 5 of README "Kernel threads on their own
  // CPUs" the first pass over freshly loaded bf16 weights ran ~6x slower than later ones.
  {
    const std::vector<float> one = moe::BenchTokens(1, d, 0);
    moe::Matrix out(1, d);
    for (int l : experts.layers()) {
      std::vector<int> ids = experts.experts().ids;
      if (experts.experts().shared) ids.push_back(moe::kSharedExpertId);
      for (int e : ids) {
        if (absl::Status status = experts.Compute(l, e, {one.data(), 1, d}, out.view());
            !status.ok()) {
          std::cerr << "moe_layer_bench: " << status.message() << std::endl;
          return 1;
        }
      }
    }
  }
  if (!TokenSetsFit(token_counts, sets, d)) return 2;
  std::map<int64_t, std::vector<std::vector<float>>> token_sets;  // by token count
  for (int64_t n : token_counts) {
    for (int set = 0; set < sets; ++set) token_sets[n].push_back(moe::BenchTokens(n, d, set));
  }
  auto input = [&](int64_t n) {
    return moe::ConstMatrixView{token_sets[n][next_set].data(), n, d};
  };
  moe::Matrix output_rows(max_tokens, d);
  if (mode == "dense") {
    return moe::TimeTokenCounts(mode, token_counts, 0, TimingFlags(), [&](int64_t n) {
      for (int e = 0; e < experts.config().routing.num_experts; ++e) {
        absl::Status status =
            experts.Compute(layer, e, input(n), moe::MatrixView{output_rows.data(), n, d});
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
  options.max_tokens = static_cast<int>(max_tokens);
  moe::ShardDescription description{experts.layers(), experts.experts(), experts.identity()};
  auto router = moe::Router::Create(options, [&](const std::string& target) {
    return std::make_unique<moe::LocalShardClient>(
        target, description,
        [&experts](int layer, int e, moe::ConstMatrixView x, moe::MatrixView y) {
          return experts.Compute(layer, e, x, y);
        },
        [&experts](int layer, absl::Span<const int> ids, absl::Span<const int64_t> tokens,
                   absl::FunctionRef<void(size_t)> run) {
          std::vector<int> ffns;
          for (int e : ids) ffns.push_back(experts.FfnId(layer, e));
          return std::find(ffns.begin(), ffns.end(), -1) == ffns.end() &&
                 experts.RunAcrossThreads(ffns, tokens, run);
        });
  });
  if (!router.ok()) {
    std::cerr << "moe_layer_bench: " << router.status().message() << std::endl;
    return 1;
  }
  const std::vector<int> layers = step ? experts.layers() : std::vector<int>{layer};
  return moe::TimeTokenCounts(
      mode, token_counts, step ? layers.size() : 0, TimingFlags(), [&](int64_t n) {
        const moe::ConstMatrixView x = input(n);
        next_set = (next_set + 1) % sets;
        for (int l : layers) {
          auto routing = (*router)->Forward(l, x, absl::InfiniteFuture(),
                                            moe::MatrixView{output_rows.data(), n, d});
          if (!routing.ok()) {
            std::cerr << "moe_layer_bench: layer " << l << ": " << routing.status().message()
                      << std::endl;
            return false;
          }
        }
        return true;
      });
}
