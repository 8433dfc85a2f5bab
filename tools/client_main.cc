// moe_client: calls a running router with random or file-given tokens and prints the output's
// statistics, the experts a partial answer left out, the routing, the latency and the router's
// counters (its Info stats: requests, fan-outs, hedges, retries, ejections, partial answers since
// it started).
//
//   moe_client --router=127.0.0.1:50051 [--tokens=N] [--input=FILE] [--repeat=N]
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "common/cli/human_units.h"
#include "common/cli/parse_flags.h"
#include "common/rpc/tensor_proto.h"
#include "common/rpc/tls_credentials.h"
#include "google/protobuf/util/json_util.h"
#include "moe/v1/expert.grpc.pb.h"
#include "moe/v1/router.grpc.pb.h"
#include "tools/client_tls_flags.h"

ABSL_FLAG(std::string, router, "127.0.0.1:50051", "Router target");
ABSL_FLAG(std::string, expert, "",
          "Instead of calling a router, print this expert shard's Info: experts, weights, calls "
          "and cross-request batching figures");
ABSL_FLAG(int, layer, -1,
          "MoE layer to compute (needed when the router serves several); -1: the one it serves");
ABSL_FLAG(int, tokens, 4, "Random tokens to send (ignored with --input)");
ABSL_FLAG(uint64_t, seed, 7, "Seed of the random tokens");
ABSL_FLAG(std::string, input, "",
          "Text file of tokens: one token per line, d_model whitespace-separated floats");
ABSL_FLAG(std::string, output, "", "Write the output tokens here, one per line");
ABSL_FLAG(int, repeat, 1, "Send the request this many times and report latency percentiles");
ABSL_FLAG(int, deadline_ms, 10000, "Deadline of each call");
ABSL_FLAG(int, show_routing, 8, "Print the routing of at most this many tokens");
ABSL_FLAG(std::string, request_json, "",
          "Write the request as JSON to this file and exit without calling Forward (a request "
          "file for ghz -D)");
ABSL_FLAG(std::string, encoding, "values",
          "How the tokens travel (router.proto's Tensor): values (repeated float), f32 "
          "(f32_data bytes; the router answers in f32_data too) or bf16 (bf16_data: rounds the "
          "tokens to bfloat16). Bytes cost a client, and ghz, far less CPU than values");
ABSL_FLAG(int, request_json_count, 1,
          "With --request_json: write a JSON array of this many requests with different random "
          "tokens (seeds --seed, --seed+1, ...); ghz sends them round-robin. Not above 1 with "
          "--input (one set of tokens)");

namespace {

std::chrono::system_clock::time_point Deadline() {
  return std::chrono::system_clock::now() +
         std::chrono::milliseconds(absl::GetFlag(FLAGS_deadline_ms));
}

bool ReadTokens(const std::string& path, int64_t d_model, moe::v1::Tensor* tensor) {
  std::ifstream in(path);
  if (!in) {
    std::cerr << "moe_client: cannot open --input=" << path << std::endl;
    return false;
  }
  std::string line;
  int64_t rows = 0;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    std::istringstream fields(line);
    int64_t count = 0;
    float value;
    while (fields >> value) {
      tensor->add_values(value);
      ++count;
    }
    if (!fields.eof()) {  // a field that is not a float32 (text, or out of range: 1e39)
      fields.clear();
      std::string bad;
      fields >> bad;
      std::cerr << "moe_client: line " << number << " of " << path << ": value " << count + 1
                << " is '" << bad << "', expected a float32 number" << std::endl;
      return false;
    }
    if (count == 0) continue;
    if (count != d_model) {
      std::cerr << "moe_client: line " << number << " of " << path << " has " << count
                << " values, expected d_model = " << d_model << std::endl;
      return false;
    }
    ++rows;
  }
  tensor->add_shape(rows);
  tensor->add_shape(d_model);
  return true;
}

// Roughly standard normal: the sum of 4 uniforms, rescaled. Deterministic for a seed.
void RandomTokens(int n, int64_t d_model, uint64_t seed, moe::v1::Tensor* tensor) {
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  auto uniform = [&state] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return static_cast<float>(state >> 40) / float(1 << 24);
  };
  tensor->add_shape(n);
  tensor->add_shape(d_model);
  for (int64_t i = 0; i < n * d_model; ++i) {
    float sum = uniform() + uniform() + uniform() + uniform();
    tensor->add_values((sum - 2.0f) * std::sqrt(3.0f));
  }
}

// The --encoding flag's TensorEncoding; exits with a message naming the choices if it has none.
moe::TensorEncoding EncodingFlag() {
  absl::StatusOr<moe::TensorEncoding> encoding =
      moe::ParseEncodingName(absl::GetFlag(FLAGS_encoding));
  if (encoding.ok()) return *encoding;
  std::cerr << "moe_client: " << encoding.status().message() << std::endl;
  std::exit(2);
}

// Rewrites `tensor` (written as `values`) in `encoding`. Tokens the router would refuse (none, or
// a value not finite) stay as they are, for the router to name what is wrong.
void Encode(moe::TensorEncoding encoding, moe::v1::Tensor* tensor) {
  if (encoding == moe::TensorEncoding::kValues || tensor->shape_size() != 2) return;
  const moe::v1::Tensor as_values = *tensor;
  auto view = moe::MatrixFromProto(as_values, -1, as_values.shape(1), "tokens");
  if (view.ok()) moe::WriteProtoTensor(*view, encoding, tensor);
}

void PrintStats(const moe::v1::Tensor& out) {
  std::vector<float> scratch;
  auto view =
      moe::MatrixFromProto(out, -1, out.shape_size() == 2 ? out.shape(1) : 0, "output", &scratch);
  if (!view.ok()) {
    std::cout << "output: " << view.status().message() << "\n";
    return;
  }
  double sum = 0, sq = 0;
  float lo = INFINITY, hi = -INFINITY;
  for (int64_t r = 0; r < view->rows; ++r) {
    for (int64_t c = 0; c < view->cols; ++c) {
      const float v = view->row(r)[c];
      sum += v;
      sq += double(v) * v;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  }
  const double n = std::max<int64_t>(1, view->rows * view->cols);
  const double mean = sum / n;
  std::cout << "output [" << out.shape(0) << ", " << out.shape(1) << "]: mean " << mean << "  std "
            << std::sqrt(std::max(0.0, sq / n - mean * mean)) << "  min " << lo << "  max " << hi
            << "  l2 " << std::sqrt(sq) << "\n";
}

// Writes `request`, or `count` requests whose random tokens use successive seeds (in `encoding`),
// as JSON. With count > 1, `request` holds --tokens random tokens (never --input's, refused in
// main), so every request is as large as the first.
int WriteRequestJson(moe::v1::ForwardRequest request, int64_t d_model, moe::TensorEncoding encoding,
                     const std::string& path, int count) {
  std::string json = count > 1 ? "[\n" : "";
  for (int i = 0; i < std::max(1, count); ++i) {
    if (i > 0) {
      request.mutable_tokens()->Clear();
      RandomTokens(absl::GetFlag(FLAGS_tokens), d_model, absl::GetFlag(FLAGS_seed) + i,
                   request.mutable_tokens());
      Encode(encoding, request.mutable_tokens());
    }
    std::string one;
    google::protobuf::util::MessageToJsonString(request, &one);
    json += one + (i + 1 < count ? ",\n" : "\n");
  }
  if (count > 1) json += "]\n";
  std::ofstream out(path);
  out << json;
  if (!out) {
    std::cerr << "moe_client: cannot write " << path << std::endl;
    return 1;
  }
  std::cout << "wrote " << moe::CountOf(std::max(1, count), "request", "requests") << " of "
            << moe::CountOf(request.tokens().shape(0), "token", "tokens") << " to " << path << "\n";
  return 0;
}

// A channel to `target` with the --tls_* flags' credentials; exits with a message if they are bad.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target) {
  auto security = moe::MakeChannelSecurity(moe::ClientTlsFlags());
  if (!security.ok()) {
    std::cerr << "moe_client: " << security.status().message() << std::endl;
    std::exit(2);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  security->Apply(&args);
  return grpc::CreateCustomChannel(target, security->credentials, args);
}

int PrintExpertInfo(const std::string& target) {
  auto stub = moe::v1::Expert::NewStub(MakeChannel(target));
  grpc::ClientContext context;
  context.set_deadline(Deadline());
  moe::v1::ExpertInfo info;
  grpc::Status status = stub->Info(&context, moe::v1::ExpertInfoRequest(), &info);
  if (!status.ok()) {
    std::cerr << "moe_client: Info failed: " << moe::DescribeCallFailure(status) << std::endl;
    return 1;
  }
  std::cout << "expert shard " << target << ": " << info.family() << " layer " << info.layer()
            << ", experts";
  for (int e : info.experts()) std::cout << " " << e;
  std::cout << (info.shared_expert() ? " + shared" : "") << ", "
            << moe::FormatBytes(info.weight_bytes()) << " of weights\n"
            << "compute calls " << info.compute_calls() << ", FFN calls " << info.ffn_batches()
            << ", tokens " << info.ffn_tokens() << ", mean batch "
            << (info.ffn_batches() ? double(info.ffn_tokens()) / info.ffn_batches() : 0.0)
            << " tokens, largest " << info.largest_batch() << "\n"
            << "kernels: " << (info.kernels().empty() ? "(not reported)" : info.kernels()) << "\n";
  return 0;
}

bool GetRouterInfo(moe::v1::Router::Stub& stub, moe::v1::ModelInfo* info) {
  grpc::ClientContext context;
  context.set_deadline(Deadline());
  grpc::Status status = stub.Info(&context, moe::v1::InfoRequest(), info);
  if (!status.ok())
    std::cerr << "moe_client: Info failed: " << moe::DescribeCallFailure(status) << std::endl;
  return status.ok();
}

// The experts that partial answers (only from a router run with --allow_partial) left out, in
// `partial` of `calls` calls. A partial answer is still an answer the router's operator chose to
// give, so the call counts as a success (exit 0); this line is what tells the user it is not the
// full layer.
void PrintMissingExperts(const std::vector<int>& missing, int partial, size_t calls) {
  std::cout << "missing experts: ";
  for (size_t i = 0; i < missing.size(); ++i) std::cout << (i ? "," : "") << missing[i];
  if (calls > 1) std::cout << " in " << partial << " of " << calls << " calls";
  std::cout << " (partial answer: the router left them out and renormalised each token's weights "
               "over the experts that answered)\n";
}

// The router's counters since it started (every client's requests, not only this one's).
void PrintRouterStats(const moe::v1::RouterStats& stats) {
  std::cout << "router stats: " << moe::CountOf(stats.requests(), "request", "requests") << ", "
            << moe::CountOf(stats.batches(), "fan-out", "fan-outs") << ", "
            << moe::CountOf(stats.hedges(), "hedge", "hedges") << " (" << stats.hedges_won()
            << " won), " << moe::CountOf(stats.retries(), "retry", "retries") << ", "
            << moe::CountOf(stats.ejections(), "ejection", "ejections") << ", "
            << moe::CountOf(stats.partial_answers(), "partial answer", "partial answers") << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Calls a MoE router and prints output statistics, the experts a partial answer left out, "
      "routing, latency and the router's counters.\n"
      "  moe_client [--router=HOST:PORT] [--layer=N] [--tokens=N] [--seed=S] [--input=FILE]\n"
      "             [--output=FILE] [--repeat=N] [--deadline_ms=MS] [--show_routing=N]\n"
      "  moe_client [--router=HOST:PORT] [--layer=N] --request_json=FILE [--request_json_count=N]\n"
      "             [--tokens=N] [--seed=S] [--input=FILE]    (writes a request for ghz -D)\n"
      "  with either: [--encoding=values|f32|bf16]    (how the tokens travel)\n"
      "  moe_client --expert=HOST:PORT [--deadline_ms=MS]     (prints a shard's Info)\n"
      "  TLS: [--tls_ca=PEM [--tls_cert=PEM --tls_key=PEM] [--tls_server_name=NAME]]");
  moe::ParseFlags(argc, argv);
  if (!absl::GetFlag(FLAGS_expert).empty()) return PrintExpertInfo(absl::GetFlag(FLAGS_expert));
  // Several requests exist to vary the tokens (and so the experts chosen); a file holds one token
  // set, so they would be copies of one request, which ghz repeats anyway.
  if (!absl::GetFlag(FLAGS_input).empty() && absl::GetFlag(FLAGS_request_json_count) > 1) {
    std::cerr << "moe_client: --request_json_count=" << absl::GetFlag(FLAGS_request_json_count)
              << " writes requests of different random tokens, and --input=FILE gives one set of "
                 "tokens: with --input write one request (ghz -D sends it every time)"
              << std::endl;
    return 2;
  }
  const moe::TensorEncoding encoding = EncodingFlag();
  auto stub = moe::v1::Router::NewStub(MakeChannel(absl::GetFlag(FLAGS_router)));

  moe::v1::ModelInfo info;
  if (!GetRouterInfo(*stub, &info)) return 1;
  std::cout << "router " << absl::GetFlag(FLAGS_router) << ": " << info.family() << " layer "
            << (absl::GetFlag(FLAGS_layer) >= 0 ? absl::GetFlag(FLAGS_layer) : info.layer())
            << ", d_model " << info.d_model() << ", " << info.num_experts() << " experts, top-"
            << info.top_k() << ", "
            << moe::CountOf(info.shards_size(), "shard group", "shard groups") << "\n";

  // A request must fit one gRPC message (2 GiB): 2^29 float32 values at most.
  if (int64_t{absl::GetFlag(FLAGS_tokens)} * std::max<int64_t>(info.d_model(), 1) > (1 << 29)) {
    std::cerr << "moe_client: --tokens=" << absl::GetFlag(FLAGS_tokens) << " of d_model "
              << info.d_model() << " is more than one gRPC message holds (2^29 floats)"
              << std::endl;
    return 2;
  }
  moe::v1::ForwardRequest request;
  request.set_return_routing(absl::GetFlag(FLAGS_request_json).empty());
  if (absl::GetFlag(FLAGS_layer) >= 0) request.set_layer(absl::GetFlag(FLAGS_layer));
  if (!absl::GetFlag(FLAGS_input).empty()) {
    if (!ReadTokens(absl::GetFlag(FLAGS_input), info.d_model(), request.mutable_tokens())) {
      return 2;
    }
  } else {
    RandomTokens(absl::GetFlag(FLAGS_tokens), info.d_model(), absl::GetFlag(FLAGS_seed),
                 request.mutable_tokens());
  }
  Encode(encoding, request.mutable_tokens());

  if (!absl::GetFlag(FLAGS_request_json).empty()) {
    return WriteRequestJson(request, info.d_model(), encoding, absl::GetFlag(FLAGS_request_json),
                            absl::GetFlag(FLAGS_request_json_count));
  }

  moe::v1::ForwardResponse response;
  std::vector<double> latencies_ms;
  std::vector<int> missing;  // experts any call's answer left out, ascending
  int partial_calls = 0;
  for (int i = 0; i < std::max(1, absl::GetFlag(FLAGS_repeat)); ++i) {
    grpc::ClientContext context;
    context.set_deadline(Deadline());
    response.Clear();
    const auto start = std::chrono::steady_clock::now();
    grpc::Status status = stub->Forward(&context, request, &response);
    latencies_ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
            .count());
    if (!status.ok()) {
      std::cerr << "moe_client: Forward failed: " << moe::DescribeCallFailure(status) << std::endl;
      return 1;
    }
    if (response.missing_experts_size() > 0) {
      ++partial_calls;
      missing.insert(missing.end(), response.missing_experts().begin(),
                     response.missing_experts().end());
    }
  }
  std::sort(missing.begin(), missing.end());
  missing.erase(std::unique(missing.begin(), missing.end()), missing.end());

  std::cout << std::fixed << std::setprecision(4);
  PrintStats(response.output());
  if (partial_calls > 0) PrintMissingExperts(missing, partial_calls, latencies_ms.size());
  for (int t = 0; t < std::min(response.routing_size(), absl::GetFlag(FLAGS_show_routing)); ++t) {
    std::cout << "token " << t << ":";
    const auto& routing = response.routing(t);
    for (int j = 0; j < routing.experts_size(); ++j) {
      std::cout << " expert " << routing.experts(j) << " (" << routing.weights(j) << ")";
    }
    std::cout << "\n";
  }
  std::sort(latencies_ms.begin(), latencies_ms.end());
  auto percentile = [&](double p) {
    return latencies_ms[std::min(latencies_ms.size() - 1,
                                 static_cast<size_t>(p * latencies_ms.size()))];
  };
  std::cout << std::setprecision(3) << "latency over "
            << moe::CountOf(latencies_ms.size(), "call", "calls") << " of "
            << moe::CountOf(request.tokens().shape(0), "token", "tokens") << ": p50 "
            << percentile(0.5) << " ms, p90 " << percentile(0.9) << " ms, p99 " << percentile(0.99)
            << " ms, max " << latencies_ms.back() << " ms\n";
  moe::v1::ModelInfo after;
  if (GetRouterInfo(*stub, &after)) PrintRouterStats(after.stats());

  if (!absl::GetFlag(FLAGS_output).empty()) {
    std::vector<float> scratch;  // the output in any encoding (values, f32_data, bf16_data)
    auto output = moe::MatrixFromProto(response.output(), request.tokens().shape(0), info.d_model(),
                                       "output", &scratch);
    std::ofstream out(absl::GetFlag(FLAGS_output));
    out << std::setprecision(9);
    for (int64_t r = 0; output.ok() && r < output->rows; ++r) {
      for (int64_t c = 0; c < output->cols; ++c) {
        out << output->row(r)[c] << (c + 1 == output->cols ? "\n" : " ");
      }
    }
    out.close();
    if (!output.ok() || !out) {
      std::cerr << "moe_client: cannot write --output=" << absl::GetFlag(FLAGS_output) << ": "
                << (output.ok() ? std::strerror(errno) : output.status().message()) << std::endl;
      return 1;
    }
  }
  return 0;
}
