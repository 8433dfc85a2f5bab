// Fuzzes a shard's Compute handling: the input bytes are parsed as a moe.v1.ComputeRequest and
// sent, through an in-process channel, to an ExpertServiceImpl serving a tiny synthetic qwen2_moe
// layer (d_model 8, experts 0-3 plus the shared expert). Only the expert service library's
// public API is used (construct, register with a server), so the target survives refactors of
// the service's internals. Every request must end in OK with one well-shaped output per group (or,
// for inputs too large for the model, overflow reports naming request rows), or in a status that
// blames the request: never a crash, a hang, or INTERNAL/UNKNOWN.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/rpc/tensor_proto.h"
#include "expert_service/expert_service.h"
#include "expert_service/expert_shard.h"
#include "fuzz/fuzz_util.h"
#include "moe/v1/expert.grpc.pb.h"
#include "testing/synthetic_model.h"

namespace {

constexpr int64_t kD = 8;

struct Shard {
  std::unique_ptr<moe::ExpertShard> shard;
  std::unique_ptr<moe::ExpertServiceImpl> service;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<moe::v1::Expert::Stub> stub;
};

Shard* MakeShard() {
  moe::ModelPreset preset;
  preset.name = "fuzz";
  preset.model_type = "qwen2_moe";
  preset.d_model = kD;
  preset.num_experts = 6;
  preset.expert_width = 4;
  preset.top_k = 2;
  preset.shared_width = 4;
  const std::string dir = moe::fuzz::ScratchDir("expert_model");
  moe::fuzz::Check(moe::WriteSyntheticModel(preset, {}, dir).ok(), "cannot write the model");
  moe::ExpertShardOptions options;
  options.model_dir = dir;
  options.layers = "0";
  options.experts_spec = "0-3,shared";
  auto shard = moe::ExpertShard::Create(options);
  moe::fuzz::Check(shard.ok(), "cannot load the model: " + std::string(shard.status().message()));
  auto* s = new Shard;
  s->shard = *std::move(shard);
  moe::BatchingOptions batching;
  s->service = std::make_unique<moe::ExpertServiceImpl>(s->shard.get(), batching);
  grpc::ServerBuilder builder;
  builder.RegisterService(s->service.get());
  s->server = builder.BuildAndStart();
  moe::fuzz::Check(s->server != nullptr, "cannot start the in-process server");
  s->stub = moe::v1::Expert::NewStub(s->server->InProcessChannel(grpc::ChannelArguments()));
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Shard* shard = MakeShard();
  moe::v1::ComputeRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  moe::v1::ComputeResponse response;
  const grpc::Status status = shard->stub->Compute(&context, request, &response);
  const grpc::StatusCode code = status.error_code();
  // FAILED_PRECONDITION: a layer this shard does not hold (the router's view is stale).
  moe::fuzz::Check(code == grpc::StatusCode::OK || code == grpc::StatusCode::INVALID_ARGUMENT ||
                       code == grpc::StatusCode::RESOURCE_EXHAUSTED ||
                       code == grpc::StatusCode::FAILED_PRECONDITION,
                   "status " + std::to_string(code) + ": " + status.error_message());
  if (!status.ok()) return 0;
  if (response.overflows_size() > 0) {
    // An input too large for the model: reported per (row, expert), with no outputs.
    moe::fuzz::Check(response.outputs_size() == 0, "outputs beside overflows");
    for (const moe::v1::Overflow& overflow : response.overflows()) {
      moe::fuzz::Check(overflow.row() >= 0 && overflow.row() < request.tokens().shape(0),
                       "overflow names a row outside the request");
    }
    return 0;
  }
  // Every answered tensor is [rows, d_model] in the encoding the request asked for (values for
  // an encoding this shard does not know); one of no rows (a group naming none) holds no values,
  // which proto3 cannot tell from any encoding's.
  auto check_tensor = [&request](const moe::v1::Tensor& out, int64_t rows,
                                 const std::string& what) {
    std::vector<float> scratch;
    moe::fuzz::Check(moe::MatrixFromProto(out, rows, kD, what, &scratch).ok(),
                     what + " is not a finite [rows, d_model] tensor");
    const moe::TensorEncoding expected =
        request.reply_encoding() == moe::v1::TENSOR_ENCODING_F32    ? moe::TensorEncoding::kF32
        : request.reply_encoding() == moe::v1::TENSOR_ENCODING_BF16 ? moe::TensorEncoding::kBf16
                                                                    : moe::TensorEncoding::kValues;
    moe::fuzz::Check(rows == 0 || moe::EncodingOf(out) == expected,
                     what + " is not in the encoding asked for");
  };
  if (request.sum_groups()) {
    moe::fuzz::Check(response.outputs_size() == 0, "outputs beside the sum");
    check_tensor(response.sum(), request.tokens().shape(0), "sum");
    return 0;
  }
  moe::fuzz::Check(response.outputs_size() == request.groups_size(), "one output per group");
  for (int g = 0; g < response.outputs_size(); ++g) {
    check_tensor(response.outputs(g), request.groups(g).rows_size(), "output " + std::to_string(g));
  }
  return 0;
}
