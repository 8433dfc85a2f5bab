#include "common/rpc/channel_arguments.h"

#include <grpc/grpc.h>

namespace moe {
namespace {

int Ms(absl::Duration d) { return static_cast<int>(absl::ToInt64Milliseconds(d)); }

// (name, value) pairs applied to both ends; see the header.
template <typename Set>
void BulkTransfer(Set&& set) {
  // Largest frame HTTP/2 allows (2^24 - 1): a megabyte message in a few frames, not 64.
  set(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, (1 << 24) - 1);
  // Initial per-stream receive window: a whole large message may be in flight before the first
  // WINDOW_UPDATE, instead of 64 KB.
  set(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 8 << 20);
}

}  // namespace

grpc::ChannelArguments ResilientChannelArguments() {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, Ms(kKeepaliveTime));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, Ms(kKeepaliveTimeout));
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // The default (2) stops keepalive pings on a connection that carries no data, which is exactly
  // the connection a silent partition leaves behind.
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, Ms(kInitialReconnectBackoff));
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, Ms(kMinConnectTimeout));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, Ms(kMaxReconnectBackoff));
  return args;
}

void AddBulkTransferArguments(grpc::ChannelArguments& args) {
  BulkTransfer([&args](const char* name, int value) { args.SetInt(name, value); });
}

void AddServerBulkTransferArguments(grpc::ServerBuilder& builder) {
  BulkTransfer(
      [&builder](const char* name, int value) { builder.AddChannelArgument(name, value); });
}

void AddServerKeepaliveArguments(grpc::ServerBuilder& builder) {
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             Ms(kServerMinPingInterval));
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
}

}  // namespace moe
