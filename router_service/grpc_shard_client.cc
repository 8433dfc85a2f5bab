#include "router_service/grpc_shard_client.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/rpc/tensor_proto.h"

namespace moe {

// State of one logical call across its attempts. Each attempt gets a fresh ClientContext (a
// context serves one RPC); all stay alive until the call is done.
struct GrpcShardClient::Call {
  v1::ComputeRequest request;
  v1::ComputeResponse response;
  std::vector<int64_t> group_rows;  // rows per group, to check the reply
  absl::Time deadline;
  Done done;
  size_t first_replica;
  size_t attempts = 0;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::string errors;
};

GrpcShardClient::GrpcShardClient(const std::vector<std::string>& targets, int channels_per_target) {
  for (const std::string& target : targets) {
    Replica replica;
    replica.target = target;
    for (int i = 0; i < std::max(1, channels_per_target); ++i) {
      grpc::ChannelArguments args;
      args.SetMaxReceiveMessageSize(-1);
      args.SetMaxSendMessageSize(-1);
      args.SetLoadBalancingPolicyName("round_robin");
      // A private subchannel pool per channel: channels to one target do not share a connection.
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      replica.channels.push_back(
          grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
      replica.stubs.push_back(v1::Expert::NewStub(replica.channels.back()));
    }
    replicas_.push_back(std::move(replica));
  }
}

void GrpcShardClient::Compute(const ShardCallInput& input, absl::Time deadline, Done done) {
  auto call = std::make_shared<Call>();
  const int64_t d = input.tokens.cols;
  MatrixView sent =
      ResizeProtoTensor(call->request.mutable_tokens(), static_cast<int64_t>(input.rows.size()), d);
  for (size_t i = 0; i < input.rows.size(); ++i) {
    std::memcpy(sent.row(i), input.tokens.row(input.rows[i]), d * sizeof(float));
  }
  for (const ExpertRows& rows : input.experts) {
    v1::ExpertGroup* group = call->request.add_groups();
    group->set_expert(rows.expert);
    group->mutable_rows()->Add(rows.rows.begin(), rows.rows.end());
    call->group_rows.push_back(static_cast<int64_t>(rows.rows.size()));
  }
  call->deadline = deadline;
  call->done = std::move(done);
  call->first_replica = next_replica_.fetch_add(1, std::memory_order_relaxed) % replicas_.size();
  StartAttempt(std::move(call));
}

void GrpcShardClient::StartAttempt(std::shared_ptr<Call> call) {
  const Replica& replica = replicas_[(call->first_replica + call->attempts) % replicas_.size()];
  ++call->attempts;
  call->contexts.push_back(std::make_unique<grpc::ClientContext>());
  grpc::ClientContext* context = call->contexts.back().get();
  context->set_deadline(absl::ToChronoTime(call->deadline));
  const size_t channel =
      next_channel_.fetch_add(1, std::memory_order_relaxed) % replica.stubs.size();
  replica.stubs[channel]->async()->Compute(
      context, &call->request, &call->response,
      [this, call, target = replica.target](grpc::Status status) {
        if (status.ok()) {
          std::move(call->done)(CheckReply(call));
          return;
        }
        absl::StrAppend(&call->errors, call->errors.empty() ? "" : "; ", "shard ", target, ": ",
                        status.error_message());
        const bool retry = status.error_code() == grpc::StatusCode::UNAVAILABLE &&
                           call->attempts < replicas_.size() && absl::Now() < call->deadline;
        if (retry) {
          call->response.Clear();
          StartAttempt(call);
          return;
        }
        std::move(call->done)(
            absl::Status(static_cast<absl::StatusCode>(status.error_code()), call->errors));
      });
}

absl::StatusOr<ShardCallOutput> GrpcShardClient::CheckReply(std::shared_ptr<Call> call) const {
  const v1::ComputeResponse& response = call->response;
  const int64_t d = call->request.tokens().shape(1);
  if (response.outputs_size() != static_cast<int>(call->group_rows.size())) {
    return absl::InternalError(absl::StrCat("shard ", Describe(), " returned ",
                                            response.outputs_size(), " outputs for ",
                                            call->group_rows.size(), " expert groups"));
  }
  ShardCallOutput output;
  for (int g = 0; g < response.outputs_size(); ++g) {
    absl::StatusOr<ConstMatrixView> view = MatrixFromProto(response.outputs(g), call->group_rows[g],
                                                           d, absl::StrCat("outputs[", g, "]"));
    if (!view.ok()) {
      return absl::InternalError(absl::StrCat(
          "shard ", Describe(), " returned a malformed reply: ", view.status().message()));
    }
    output.groups.push_back(*view);
  }
  output.storage = std::move(call);  // the views point into call->response
  return output;
}

std::string GrpcShardClient::Describe() const {
  std::string targets;
  for (const Replica& replica : replicas_) {
    absl::StrAppend(&targets, targets.empty() ? "" : " | ", replica.target);
  }
  return targets;
}

std::vector<std::string> GrpcShardClient::ReplicaStates() const {
  std::vector<std::string> states;
  for (const Replica& replica : replicas_) {
    // The first channel speaks for the replica; the others connect the same way.
    switch (replica.channels[0]->GetState(/*try_to_connect=*/false)) {
      case GRPC_CHANNEL_IDLE:
        states.push_back("IDLE");
        break;
      case GRPC_CHANNEL_CONNECTING:
        states.push_back("CONNECTING");
        break;
      case GRPC_CHANNEL_READY:
        states.push_back("READY");
        break;
      case GRPC_CHANNEL_TRANSIENT_FAILURE:
        states.push_back("TRANSIENT_FAILURE");
        break;
      case GRPC_CHANNEL_SHUTDOWN:
        states.push_back("SHUTDOWN");
        break;
    }
  }
  return states;
}

}  // namespace moe
