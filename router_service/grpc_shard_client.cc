#include "router_service/grpc_shard_client.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/rpc/connection_error.h"

namespace moe {

// State of one logical call across its attempts. Each attempt gets a fresh ClientContext (a
// context serves one RPC); all stay alive until the call is done.
struct GrpcShardClient::Call {
  const v1::ComputeRequest* request;
  v1::ComputeResponse* response;
  absl::Time deadline;
  std::function<void(absl::Status)> done;
  size_t first_replica;
  size_t attempts = 0;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::string errors;
};

GrpcShardClient::GrpcShardClient(const std::vector<std::string>& targets, int channels_per_target,
                                 const ChannelSecurity& security)
    : security_(security), last_failure_(targets.size()) {
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
      security.Apply(&args);
      replica.channels.push_back(grpc::CreateCustomChannel(target, security.credentials, args));
      replica.stubs.push_back(v1::Expert::NewStub(replica.channels.back()));
    }
    replicas_.push_back(std::move(replica));
  }
}

void GrpcShardClient::Compute(const v1::ComputeRequest* request, v1::ComputeResponse* response,
                              absl::Time deadline, std::function<void(absl::Status)> done) {
  auto call = std::make_shared<Call>();
  call->request = request;
  call->response = response;
  call->deadline = deadline;
  call->done = std::move(done);
  call->first_replica = next_replica_.fetch_add(1, std::memory_order_relaxed) % replicas_.size();
  StartAttempt(std::move(call));
}

void GrpcShardClient::StartAttempt(std::shared_ptr<Call> call) {
  const size_t index = (call->first_replica + call->attempts) % replicas_.size();
  const Replica& replica = replicas_[index];
  ++call->attempts;
  call->contexts.push_back(std::make_unique<grpc::ClientContext>());
  grpc::ClientContext* context = call->contexts.back().get();
  context->set_deadline(absl::ToChronoTime(call->deadline));
  const size_t channel =
      next_channel_.fetch_add(1, std::memory_order_relaxed) % replica.stubs.size();
  replica.stubs[channel]->async()->Compute(
      context, call->request, call->response,
      [this, call, index, target = replica.target](grpc::Status status) {
        if (status.ok()) {
          call->done(absl::OkStatus());
          return;
        }
        std::string cause = ConnectionFailureCause(status, security_.tls, security_.flag_prefix);
        absl::StrAppend(&call->errors, call->errors.empty() ? "" : "; ", "shard ", target, ": ",
                        cause, cause.empty() ? "" : " (", status.error_message(),
                        cause.empty() ? "" : ")");
        if (!cause.empty()) {
          absl::MutexLock lock(&mu_);
          last_failure_[index] = std::move(cause);
        }
        const bool retry = status.error_code() == grpc::StatusCode::UNAVAILABLE &&
                           call->attempts < replicas_.size() && absl::Now() < call->deadline;
        if (retry) {
          call->response->Clear();
          StartAttempt(call);
          return;
        }
        call->done(absl::Status(static_cast<absl::StatusCode>(status.error_code()), call->errors));
      });
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

std::vector<std::string> GrpcShardClient::ReplicaErrors() const {
  std::vector<std::string> errors(replicas_.size());
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < replicas_.size(); ++i) {
    // A cause from before the replica recovered is history, not news.
    if (replicas_[i].channels[0]->GetState(/*try_to_connect=*/false) != GRPC_CHANNEL_READY) {
      errors[i] = last_failure_[i];
    }
  }
  return errors;
}

}  // namespace moe
