#include "router_service/grpc_shard_client.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/rpc/channel_arguments.h"
#include "common/rpc/connection_error.h"
#include "common/rpc/tensor_proto.h"
#include "common/tensor/finite.h"
#include "common/tensor/weighted_rows.h"

namespace moe {
namespace {

// Keepalive and bounded reconnect backoff (common/rpc/channel_arguments.h), so a silently
// partitioned shard fails its calls within about 2 s and a restarted one is used again within
// about a second; plus what the router's shard channels need.
// gRPC's receive limit for ShardWireOptions::max_reply_bytes (-1: none).
int ShardReplyLimit(int64_t max_reply_bytes) {
  return max_reply_bytes > 0
             ? static_cast<int>(std::min<int64_t>(max_reply_bytes, std::numeric_limits<int>::max()))
             : -1;
}

grpc::ChannelArguments ShardChannelArguments(int64_t max_reply_bytes) {
  grpc::ChannelArguments args = ResilientChannelArguments();
  args.SetMaxReceiveMessageSize(ShardReplyLimit(max_reply_bytes));
  args.SetMaxSendMessageSize(-1);
  args.SetLoadBalancingPolicyName("round_robin");
  // A private subchannel pool per channel: channels to one target do not share a connection.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  AddBulkTransferArguments(args);
  return args;
}

}  // namespace

int64_t MaxValidReplyBytes(int64_t tokens, int top_k, bool shared_expert, int64_t d_model) {
  return tokens * (top_k + (shared_expert ? 1 : 0)) * d_model * 4 + (int64_t{1} << 20);
}

absl::Status GrpcShardClient::FromGrpc(const grpc::Status& status, const std::string& target,
                                       const ChannelSecurity& security) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat("shard ", target, ": ",
                                   ExplainStatus(status, security.tls, security.flag_prefix)));
}

// One Compute call, as a unary reactor: gRPC calls OnDone last and touches nothing of the call
// after it returns, so OnDone may drop the call's reference to itself (a lambda capturing the
// call's owner would be destroyed inside gRPC's own bookkeeping). Its shared_ptr is also the
// reply's storage.
class GrpcShardClient::Call final : public ShardCall, public grpc::ClientUnaryReactor {
 public:
  void Cancel() override { context.TryCancel(); }
  void OnDone(const grpc::Status& status) override {
    std::shared_ptr<Call> self = std::move(self_);
    Done finish = std::move(done);
    std::move(finish)(Reply(status, self));
  }

  std::shared_ptr<Call> self_;  // set until OnDone
  std::string target;
  ChannelSecurity security;
  int64_t max_reply_bytes = 0;  // the channel's receive limit; 0: gRPC's maximum
  grpc::ClientContext context;
  v1::ComputeRequest request;
  v1::ComputeResponse response;
  std::vector<int64_t> rows;               // request rows, to name tokens in overflow errors
  std::vector<int64_t> group_rows;         // rows per group, to check the reply
  bool weighted = false;                   // asked for per-token sums
  std::deque<std::vector<float>> scratch;  // reply tensors widened from bf16
  Matrix local_sum;                        // made here for a shard without sum_groups
  Done done;

 private:
  absl::StatusOr<ShardCallOutput> Reply(const grpc::Status& status, std::shared_ptr<Call> self);
};

absl::StatusOr<ShardCallOutput> GrpcShardClient::Call::Reply(const grpc::Status& status,
                                                             std::shared_ptr<Call> self) {
  // gRPC's "Received message larger than max (N vs. LIMIT)", with our limit: the reply was too
  // large, which no valid shard sends (the shard's own limit on requests reads the same, but
  // names its limit).
  if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED && max_reply_bytes > 0 &&
      absl::StrContains(status.error_message(),
                        absl::StrCat(" vs. ", ShardReplyLimit(max_reply_bytes), ")"))) {
    return absl::InternalError(absl::StrCat("shard ", target,
                                            " sent a reply larger than any valid one for this "
                                            "model: ",
                                            status.error_message(), " bytes"));
  }
  if (!status.ok()) return FromGrpc(status, target, security);
  if (response.overflows_size() > 0) {
    const v1::Overflow& overflow = response.overflows(0);
    const int64_t token = overflow.row() >= 0 && overflow.row() < static_cast<int64_t>(rows.size())
                              ? rows[overflow.row()]
                              : -1;
    return absl::InvalidArgumentError(
        absl::StrCat("token ", token, ": the ",
                     overflow.in_sum() ? std::string("weighted sum of its experts' outputs")
                     : overflow.expert() == kSharedExpertId
                         ? std::string("output of the shared expert")
                         : absl::StrCat("output of expert ", overflow.expert()),
                     " overflows float32 (the input is finite but too large)"));
  }
  const int64_t d = request.tokens().shape(1);
  auto malformed = [this](const absl::Status& why) {
    return absl::InternalError(
        absl::StrCat("shard ", target, " returned a malformed reply: ", why.message()));
  };
  ShardCallOutput output;
  if (weighted && response.has_sum()) {
    absl::StatusOr<ConstMatrixView> sum = MatrixFromProto(
        response.sum(), static_cast<int64_t>(rows.size()), d, "sum", &scratch.emplace_back());
    if (!sum.ok()) return malformed(sum.status());
    output.sum = *sum;
    output.storage = std::move(self);  // the view points into response or scratch
    return output;
  }
  if (response.outputs_size() != static_cast<int>(group_rows.size())) {
    return absl::InternalError(absl::StrCat("shard ", target, " returned ", response.outputs_size(),
                                            " outputs for ", group_rows.size(), " expert groups"));
  }
  for (int g = 0; g < response.outputs_size(); ++g) {
    absl::StatusOr<ConstMatrixView> view =
        MatrixFromProto(response.outputs(g), group_rows[g], d, absl::StrCat("outputs[", g, "]"),
                        &scratch.emplace_back());
    if (!view.ok()) return malformed(view.status());
    output.groups.push_back(*view);
  }
  if (weighted) {
    // A shard that predates sum_groups answered per group: sum here, as it would have.
    Matrix& sum = local_sum;
    sum = Matrix(static_cast<int64_t>(rows.size()), d);
    for (int g = 0; g < request.groups_size(); ++g) {
      const v1::ExpertGroup& group = request.groups(g);
      AddWeightedRows<int32_t>(output.groups[g], group.rows(), group.weights(), sum.view());
    }
    if (const int64_t i = FirstNonFinite(absl::MakeConstSpan(sum.data(), sum.size())); i >= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("token ", rows[i / d],
                       ": the weighted sum of its experts' outputs overflows float32 (the "
                       "input is finite but too large)"));
    }
    output.groups.clear();
    output.sum = sum.view();
  }
  output.storage = std::move(self);  // the views point into response, scratch or local_sum
  return output;
}

// One Info call, as a reactor for the same reason as Call.
class GrpcShardClient::Describing final : public grpc::ClientUnaryReactor {
 public:
  void OnDone(const grpc::Status& status) override {
    std::unique_ptr<Describing> self(this);  // deleting in OnDone is what gRPC allows
    std::move(done)(Reply(status));
  }

  std::string target;
  ChannelSecurity security;
  grpc::ClientContext context;
  v1::ExpertInfoRequest request;
  v1::ExpertInfo info;
  DescribeDone done;
  std::shared_ptr<std::atomic<bool>> reads_tensor_bytes;  // the client's; set from info

 private:
  absl::StatusOr<ShardDescription> Reply(const grpc::Status& status) {
    if (!status.ok()) return FromGrpc(status, target, security);
    reads_tensor_bytes->store(info.reads_tensor_bytes(), std::memory_order_relaxed);
    ShardDescription description;
    description.layers.assign(info.layers().begin(), info.layers().end());
    std::sort(description.layers.begin(), description.layers.end());
    description.experts.ids.assign(info.experts().begin(), info.experts().end());
    std::sort(description.experts.ids.begin(), description.experts.ids.end());
    description.experts.shared = info.shared_expert();
    description.identity.family = info.family();
    description.identity.d_model = info.d_model();
    description.identity.expert_width = info.expert_width();
    description.identity.num_experts = info.num_experts();
    description.identity.fingerprint = info.model_fingerprint();
    return description;
  }
};

GrpcShardClient::GrpcShardClient(std::string target, int channels, const ChannelSecurity& security,
                                 ShardWireOptions wire)
    : target_(std::move(target)), security_(security), wire_(wire) {
  grpc::ChannelArguments args = ShardChannelArguments(wire_.max_reply_bytes);
  security_.Apply(&args);
  for (int i = 0; i < std::max(1, channels); ++i) {
    channels_.push_back(grpc::CreateCustomChannel(target_, security_.credentials, args));
    stubs_.push_back(v1::Expert::NewStub(channels_.back()));
  }
}

std::shared_ptr<ShardCall> GrpcShardClient::Compute(const ShardCallInput& input,
                                                    absl::Time deadline, Done done) {
  auto call = std::make_shared<Call>();
  call->request.set_layer(input.layer);
  // Until the shard's Info says it reads them, the encoding every shard reads.
  const bool bytes = reads_tensor_bytes_->load(std::memory_order_relaxed);
  const TensorEncoding encoding = !bytes       ? TensorEncoding::kValues
                                  : wire_.bf16 ? TensorEncoding::kBf16
                                               : TensorEncoding::kF32;
  if (encoding == TensorEncoding::kBf16) {
    // bf16 would carry such a value as an infinity, which the shard would refuse as one.
    for (const int64_t row : input.rows) {
      const float* x = input.tokens.row(row);
      if (const int64_t c = FirstNonFiniteAsBf16(absl::MakeConstSpan(x, input.tokens.cols));
          c >= 0) {
        std::move(done)(absl::InvalidArgumentError(absl::StrCat(
            "token ", row, ": value ", x[c], " at column ", c,
            " is too large for the shards' bf16 wire (--shard_wire_dtype=bf16 carries magnitudes "
            "below 3.3961e38)")));
        return std::make_shared<FinishedShardCall>();
      }
    }
  }
  WriteProtoTensorRows(input.tokens, input.rows, encoding, call->request.mutable_tokens());
  call->request.set_reply_encoding(!bytes       ? v1::TENSOR_ENCODING_VALUES
                                   : wire_.bf16 ? v1::TENSOR_ENCODING_BF16
                                                : v1::TENSOR_ENCODING_F32);
  call->weighted = IsWeighted(input);
  call->request.set_sum_groups(call->weighted);
  for (const ExpertRows& rows : input.experts) {
    v1::ExpertGroup* group = call->request.add_groups();
    group->set_expert(rows.expert);
    group->mutable_rows()->Add(rows.rows.begin(), rows.rows.end());
    if (call->weighted) group->mutable_weights()->Add(rows.weights.begin(), rows.weights.end());
    call->group_rows.push_back(static_cast<int64_t>(rows.rows.size()));
  }
  call->rows.assign(input.rows.begin(), input.rows.end());
  call->done = std::move(done);
  call->target = target_;
  call->security = security_;
  call->max_reply_bytes = wire_.max_reply_bytes;
  call->context.set_deadline(absl::ToChronoTime(deadline));
  call->self_ = call;
  const size_t channel = next_channel_.fetch_add(1, std::memory_order_relaxed) % stubs_.size();
  stubs_[channel]->async()->Compute(&call->context, &call->request, &call->response, call.get());
  call->StartCall();
  return call;
}

void GrpcShardClient::Describe(absl::Time deadline, DescribeDone done) {
  auto* describing = new Describing();  // deletes itself in OnDone
  describing->target = target_;
  describing->security = security_;
  describing->done = std::move(done);
  describing->reads_tensor_bytes = reads_tensor_bytes_;
  describing->context.set_deadline(absl::ToChronoTime(deadline));
  stubs_[0]->async()->Info(&describing->context, &describing->request, &describing->info,
                           describing);
  describing->StartCall();
}

std::string GrpcShardClient::State() const {
  switch (channels_[0]->GetState(/*try_to_connect=*/false)) {
    case GRPC_CHANNEL_IDLE:
      return "IDLE";
    case GRPC_CHANNEL_CONNECTING:
      return "CONNECTING";
    case GRPC_CHANNEL_READY:
      return "READY";
    case GRPC_CHANNEL_TRANSIENT_FAILURE:
      return "TRANSIENT_FAILURE";
    case GRPC_CHANNEL_SHUTDOWN:
      return "SHUTDOWN";
  }
  return "UNKNOWN";
}

}  // namespace moe
