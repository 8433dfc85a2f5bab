// ShardClient over gRPC's callback API. `channels_per_target` channels per replica target (each
// its own HTTP/2 connection, calls spread over them), reused by every call; "dns:///name:port"
// targets use round_robin over every address the name resolves to. A call that fails UNAVAILABLE
// is retried on the next replica while the deadline allows (inference is side-effect free, so a
// retry is always safe). `security` gives the channels' credentials (plaintext or TLS,
// common/rpc/tls_credentials.h). Thread-safe.
#ifndef MOE_ROUTER_SERVICE_GRPC_SHARD_CLIENT_H_
#define MOE_ROUTER_SERVICE_GRPC_SHARD_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/rpc/tls_credentials.h"
#include "moe/v1/expert.grpc.pb.h"
#include "router_service/shard_client.h"

namespace moe {

class GrpcShardClient final : public ShardClient {
 public:
  GrpcShardClient(const std::vector<std::string>& targets, int channels_per_target,
                  const ChannelSecurity& security = ChannelSecurity::Plaintext());

  void Compute(const v1::ComputeRequest* request, v1::ComputeResponse* response,
               absl::Time deadline, std::function<void(absl::Status)> done) override;
  std::vector<std::string> ReplicaStates() const override;
  std::vector<std::string> ReplicaErrors() const override;

 private:
  struct Replica {
    std::string target;
    std::vector<std::shared_ptr<grpc::Channel>> channels;
    std::vector<std::unique_ptr<v1::Expert::Stub>> stubs;  // one per channel
  };
  struct Call;

  void StartAttempt(std::shared_ptr<Call> call);

  const ChannelSecurity security_;
  std::vector<Replica> replicas_;
  // Per replica: the cause of its last failed connection (connection_error.h), shown by
  // ReplicaErrors while the replica is not READY.
  mutable absl::Mutex mu_;
  std::vector<std::string> last_failure_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint32_t> next_replica_{0};  // round-robin start for load spreading
  std::atomic<uint32_t> next_channel_{0};
};

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_GRPC_SHARD_CLIENT_H_
