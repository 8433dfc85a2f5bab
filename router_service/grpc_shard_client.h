// ShardClient over gRPC's callback API: the one place the router turns its plain C++ work into
// moe.v1.ComputeRequest (gathering each token row once, straight into the message) and checks
// moe.v1.ComputeResponse (shapes, finite values) before handing views of it back.
// `channels_per_target` channels per replica target (each its own HTTP/2 connection, calls spread
// over them), reused by every call; "dns:///name:port" targets use round_robin over every address
// the name resolves to. A call that fails UNAVAILABLE is retried on the next replica while the
// deadline allows (inference is side-effect free, so a retry is always safe). Thread-safe.
#ifndef MOE_ROUTER_SERVICE_GRPC_SHARD_CLIENT_H_
#define MOE_ROUTER_SERVICE_GRPC_SHARD_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "moe/v1/expert.grpc.pb.h"
#include "router_service/shard_client.h"

namespace moe {

class GrpcShardClient final : public ShardClient {
 public:
  GrpcShardClient(const std::vector<std::string>& targets, int channels_per_target);

  void Compute(const ShardCallInput& input, absl::Time deadline, Done done) override;
  std::vector<std::string> ReplicaStates() const override;

 private:
  struct Replica {
    std::string target;
    std::vector<std::shared_ptr<grpc::Channel>> channels;
    std::vector<std::unique_ptr<v1::Expert::Stub>> stubs;  // one per channel
  };
  struct Call;

  void StartAttempt(std::shared_ptr<Call> call);
  // Checks the reply against the request's groups; views of its outputs on success.
  absl::StatusOr<ShardCallOutput> CheckReply(std::shared_ptr<Call> call) const;
  std::string Describe() const;  // "target | target" for messages

  std::vector<Replica> replicas_;
  std::atomic<uint32_t> next_replica_{0};  // round-robin start for load spreading
  std::atomic<uint32_t> next_channel_{0};
};

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_GRPC_SHARD_CLIENT_H_
