// moe_wire_bench: where a large loopback gRPC call's time goes, measured in one run. An echo
// moe.v1.Expert service (its Compute decodes the request's tokens as a shard does and answers
// them back as one output, as a shard's reply) runs in this process on 127.0.0.1; a client calls
// it with [rows, d_model] tensors. Three parts, each a median over --calls calls:
//   protobuf: serialise + parse of one ComputeRequest, per tensor encoding (no transport)
//   memcpy:   the same bytes copied once (the floor of one copy)
//   grpc:     the echo call, per encoding, with gRPC's default HTTP/2 settings and with the
//             project's (common/rpc/channel_arguments.h BulkTransfer*), taking turns call by
//             call; all of it first with glibc's default malloc policy, then again after
//             KeepFreedMemory() (common/rpc/memory_policy.h)
// Each gRPC configuration reports the median wall time of a call, and the mean process CPU time
// and voluntary context switches per call (client and server threads alike): on a loaded
// machine wall time mostly measures the scheduler, CPU time and switches still measure the work
// and the thread hops. Prints one JSON object; compare figures only within one run.
//
//   moe_wire_bench [--bytes=1048576] [--d_model=1024] [--calls=60]
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/cli/parse_flags.h"
#include "common/rpc/channel_arguments.h"
#include "common/rpc/memory_policy.h"
#include "common/rpc/tensor_proto.h"
#include "moe/v1/expert.grpc.pb.h"

ABSL_FLAG(int64_t, bytes, 1 << 20, "Float32 bytes of the request tensor (the reply is as big)");
ABSL_FLAG(int64_t, d_model, 1024, "Row width of the tensor");
ABSL_FLAG(int, calls, 60, "Timed calls per configuration (after 5 warm-up calls)");

namespace moe {
namespace {

using Clock = std::chrono::steady_clock;

double MedianMs(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

template <typename Fn>
double TimeMs(int calls, Fn&& fn) {  // median of `calls` after 5 warm-up calls
  for (int i = 0; i < 5; ++i) fn();
  std::vector<double> ms;
  for (int i = 0; i < calls; ++i) {
    const auto start = Clock::now();
    fn();
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  return MedianMs(std::move(ms));
}

struct Usage {
  double cpu_ms;
  int64_t switches;
};

// This process's CPU time and voluntary context switches so far (every thread's).
Usage Now() {
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  auto ms = [](const timeval& t) { return t.tv_sec * 1e3 + t.tv_usec / 1e3; };
  return {ms(usage.ru_utime) + ms(usage.ru_stime), usage.ru_nvcsw};
}

v1::TensorEncoding ProtoEncoding(TensorEncoding encoding) {
  switch (encoding) {
    case TensorEncoding::kValues:
      return v1::TENSOR_ENCODING_VALUES;
    case TensorEncoding::kF32:
      return v1::TENSOR_ENCODING_F32;
    case TensorEncoding::kBf16:
      return v1::TENSOR_ENCODING_BF16;
  }
  return v1::TENSOR_ENCODING_VALUES;
}

// Echoes the request's tokens as outputs[0], decoded and re-encoded as a shard would.
class EchoService final : public v1::Expert::Service {
  grpc::Status Compute(grpc::ServerContext*, const v1::ComputeRequest* request,
                       v1::ComputeResponse* response) override {
    std::vector<float> scratch;
    absl::StatusOr<ConstMatrixView> tokens =
        MatrixFromProto(request->tokens(), -1, request->tokens().shape(1), "tokens", &scratch);
    if (!tokens.ok()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad tokens");
    const TensorEncoding encoding =
        request->reply_encoding() == v1::TENSOR_ENCODING_F32    ? TensorEncoding::kF32
        : request->reply_encoding() == v1::TENSOR_ENCODING_BF16 ? TensorEncoding::kBf16
                                                                : TensorEncoding::kValues;
    WriteProtoTensor(*tokens, encoding, response->add_outputs());
    return grpc::Status::OK;
  }
};

v1::ComputeRequest MakeRequest(int64_t rows, int64_t d, TensorEncoding encoding) {
  Matrix m(rows, d);
  for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = static_cast<float>(i % 977) * 0.001f;
  v1::ComputeRequest request;
  WriteProtoTensor(m.view(), encoding, request.mutable_tokens());
  request.set_reply_encoding(ProtoEncoding(encoding));
  v1::ExpertGroup* group = request.add_groups();
  group->set_expert(0);
  for (int64_t r = 0; r < rows; ++r) group->add_rows(static_cast<int32_t>(r));
  return request;
}

int Main() {
  const int64_t d = absl::GetFlag(FLAGS_d_model);
  const int64_t rows = std::max<int64_t>(1, absl::GetFlag(FLAGS_bytes) / (4 * d));
  const int calls = absl::GetFlag(FLAGS_calls);
  const TensorEncoding encodings[] = {TensorEncoding::kValues, TensorEncoding::kF32,
                                      TensorEncoding::kBf16};
  std::vector<std::string> parts;

  // protobuf alone: serialise and parse one request.
  for (TensorEncoding encoding : encodings) {
    const v1::ComputeRequest request = MakeRequest(rows, d, encoding);
    std::string wire;
    v1::ComputeRequest parsed;
    const double ser = TimeMs(calls, [&] { request.SerializeToString(&wire); });
    const double parse = TimeMs(calls, [&] { parsed.ParseFromString(wire); });
    parts.push_back(absl::StrCat("\"protobuf_", FieldName(encoding),
                                 "\": {\"wire_bytes\": ", wire.size(), ", \"serialize_ms\": ", ser,
                                 ", \"parse_ms\": ", parse, "}"));
  }
  {
    std::vector<char> from(rows * d * 4, 1), to(rows * d * 4);
    const double ms = TimeMs(calls, [&] { std::memcpy(to.data(), from.data(), from.size()); });
    parts.push_back(absl::StrCat("\"memcpy_ms\": ", ms));
  }

  // Both servers and all six channels live at once and the configurations take turns, call by
  // call, so load from other processes falls on each alike.
  EchoService service;
  struct Config {
    std::string name;
    std::unique_ptr<v1::Expert::Stub> stub;
    v1::ComputeRequest request;
    std::vector<double> ms;
    double cpu_ms = 0;     // process CPU time (client and server threads), summed
    int64_t switches = 0;  // voluntary context switches (threads waiting on each other)
  };
  std::vector<std::unique_ptr<grpc::Server>> servers;
  std::vector<Config> configs;
  for (bool tuned : {false, true}) {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.SetMaxReceiveMessageSize(-1);
    builder.SetMaxSendMessageSize(-1);
    if (tuned) AddServerBulkTransferArguments(builder);
    builder.RegisterService(&service);
    servers.push_back(builder.BuildAndStart());
    for (TensorEncoding encoding : encodings) {
      grpc::ChannelArguments args;
      args.SetMaxReceiveMessageSize(-1);
      args.SetMaxSendMessageSize(-1);
      // A private connection per configuration.
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      if (tuned) AddBulkTransferArguments(args);
      configs.push_back(
          {absl::StrCat("grpc_", tuned ? "tuned_" : "default_", FieldName(encoding)),
           v1::Expert::NewStub(grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                                         grpc::InsecureChannelCredentials(), args)),
           MakeRequest(rows, d, encoding),
           {}});
    }
  }
  // The same calls twice: with glibc's default malloc policy, then after KeepFreedMemory().
  for (const char* malloc_policy : {"malloc_default", "keep_freed"}) {
    if (malloc_policy[0] == 'k') KeepFreedMemory();
    for (Config& config : configs) {
      config.ms.clear();
      config.cpu_ms = 0;
      config.switches = 0;
    }
    for (int round = 0; round < calls + 5; ++round) {
      for (Config& config : configs) {
        grpc::ClientContext context;
        v1::ComputeResponse response;
        const Usage before = Now();
        const auto start = Clock::now();
        if (!config.stub->Compute(&context, config.request, &response).ok()) {
          std::fprintf(stderr, "moe_wire_bench: an echo call failed (%s)\n", config.name.c_str());
          return 1;
        }
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
        const Usage after = Now();
        if (round >= 5) {
          config.ms.push_back(ms);
          config.cpu_ms += after.cpu_ms - before.cpu_ms;
          config.switches += after.switches - before.switches;
        }
      }
    }
    for (Config& config : configs) {
      parts.push_back(absl::StrCat("\"", malloc_policy, "_", config.name, "\": {\"wall_ms\": ",
                                   MedianMs(config.ms), ", \"cpu_ms\": ", config.cpu_ms / calls,
                                   ", \"context_switches\": ", 1.0 * config.switches / calls, "}"));
    }
  }
  for (auto& server : servers) server->Shutdown();
  std::printf("{\"rows\": %lld, \"d_model\": %lld, \"f32_bytes\": %lld, %s}\n",
              static_cast<long long>(rows), static_cast<long long>(d),
              static_cast<long long>(rows * d * 4), absl::StrJoin(parts, ", ").c_str());
  return 0;
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Times protobuf, memcpy and a loopback gRPC echo of one tensor, per encoding.\n"
      "  moe_wire_bench [--bytes=1048576] [--d_model=1024] [--calls=60]");
  moe::ParseFlags(argc, argv);
  return moe::Main();
}
