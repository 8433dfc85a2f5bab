// ShardClient for one target over gRPC's callback API: the one place the router turns its plain
// C++ work into moe.v1.ComputeRequest (gathering each token row once, straight into the message)
// and checks moe.v1.ComputeResponse (count, shapes, finite values, overflow reports) before
// handing views of it back. `channels` channels to the target (each its own HTTP/2 connection,
// calls spread over them); "dns:///name:port" targets use round_robin over every address the name
// resolves to. Channels send keepalive pings so a silently dropped peer fails calls within seconds
// (DESIGN.md §10), and reconnect with bounded backoff so a restarted shard is used again within
// about a second. `security` gives the credentials (plaintext or TLS, tls_credentials.h); a
// failure caused by TLS says so first (connection_error.h).
//
// Wire format: tensors go as Tensor.f32_data (raw little-endian bytes), or bf16_data with
// ShardWireOptions::bf16, to shards whose Info says `reads_tensor_bytes`; as Tensor.values to
// others (and before the first Info answer). Weighted calls set sum_groups; a shard that predates
// it answers per group and the client sums the groups itself. HTTP/2 windows and frames are
// sized for megabyte messages (channel_arguments.h). Thread-safe.
#ifndef MOE_ROUTER_SERVICE_GRPC_SHARD_CLIENT_H_
#define MOE_ROUTER_SERVICE_GRPC_SHARD_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "common/rpc/tls_credentials.h"
#include "moe/v1/expert.grpc.pb.h"
#include "router_service/shard_client.h"

namespace moe {

struct ShardWireOptions {
  // Send tokens and receive outputs as bfloat16: half the bytes, but every value is rounded to
  // 8 significant bits each way (relative error ≤ 2^-9 per value; README "Wire format").
  bool bf16 = false;
  // Largest reply accepted (gRPC's receive limit on the shard channels); 0: gRPC's maximum (2 GiB).
  // A larger reply fails its call as Internal naming the shard. See MaxValidReplyBytes.
  int64_t max_reply_bytes = 0;
};

// The largest reply a valid shard can send for a call of at most `tokens` token rows: one output
// row per (token, expert) of top_k (+ 1 with a shared expert) at 4 bytes per value, plus 1 MiB for
// the message's framing.
int64_t MaxValidReplyBytes(int64_t tokens, int top_k, bool shared_expert, int64_t d_model);

class GrpcShardClient final : public ShardClient {
 public:
  GrpcShardClient(std::string target, int channels,
                  const ChannelSecurity& security = ChannelSecurity::Plaintext(),
                  ShardWireOptions wire = {});

  std::shared_ptr<ShardCall> Compute(const ShardCallInput& input, absl::Time deadline,
                                     Done done) override;
  void Describe(absl::Time deadline, DescribeDone done) override;
  const std::string& target() const override { return target_; }
  std::string State() const override;

 private:
  class Call;
  class Describing;

  // The callbacks use no member: a Describe may finish after the client is gone (a refresh
  // abandoned at shutdown).
  static absl::Status FromGrpc(const grpc::Status& status, const std::string& target,
                               const ChannelSecurity& security);

  const std::string target_;
  const ChannelSecurity security_;
  const ShardWireOptions wire_;
  // Set by Describe from the shard's Info; shared because a Describe may outlive the client.
  const std::shared_ptr<std::atomic<bool>> reads_tensor_bytes_ =
      std::make_shared<std::atomic<bool>>(false);
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<v1::Expert::Stub>> stubs_;  // one per channel
  std::atomic<uint32_t> next_channel_{0};
};

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_GRPC_SHARD_CLIENT_H_
