// Keepalive and reconnect policy of the project's gRPC channels, and the matching enforcement on
// its servers, in one place so the two sides cannot drift apart.
//
// Clients (the router's shard channels, tools) ping every kKeepaliveTime, also with no call in
// flight, and drop a connection whose ping is not acknowledged within kKeepaliveTimeout: a peer
// whose packets are silently dropped (a partition, no RST) fails its calls with UNAVAILABLE
// within about two seconds instead of at their deadlines. Reconnect backoff is bounded by
// kMaxReconnectBackoff, so a restarted or healed peer is connected again within about a second.
//
// Servers must accept those pings: gRPC's defaults GOAWAY a client that pings more often than
// every 5 minutes without data (too_many_pings). AddServerKeepaliveArguments() lifts that.
// Bulk transfer: the project's calls carry megabytes of tensors (a 256-token request of a d 2048
// model is 2 MB each way per shard). gRPC's default HTTP/2 settings (16 KB frames, a 64 KB
// initial stream window grown by BDP probing) cost such a call several window-update round trips
// and thousands of frames; AddBulkTransferArguments / AddServerBulkTransferArguments raise them
// (bench/wire_bench.cc measures the difference). Apply them on both ends: each side announces
// what it accepts.
//
// Thread-safe (pure functions).
#ifndef MOE_COMMON_RPC_CHANNEL_ARGUMENTS_H_
#define MOE_COMMON_RPC_CHANNEL_ARGUMENTS_H_

#include <grpcpp/server_builder.h>
#include <grpcpp/support/channel_arguments.h>

#include "absl/time/time.h"

namespace moe {

inline constexpr absl::Duration kKeepaliveTime = absl::Seconds(1);
inline constexpr absl::Duration kKeepaliveTimeout = absl::Seconds(1);
inline constexpr absl::Duration kInitialReconnectBackoff = absl::Milliseconds(100);
inline constexpr absl::Duration kMaxReconnectBackoff = absl::Seconds(1);
// gRPC reads GRPC_ARG_MIN_RECONNECT_BACKOFF_MS as the shortest connect timeout (default 20 s):
// an attempt into a partition holds the channel that long. One second bounds it while leaving a
// TCP + TLS handshake across a LAN, or a continent, ample time.
inline constexpr absl::Duration kMinConnectTimeout = absl::Seconds(1);
// Smallest ping interval a server accepts without counting a strike; below kKeepaliveTime so
// timer jitter never makes a well-behaved client look abusive.
inline constexpr absl::Duration kServerMinPingInterval = absl::Milliseconds(500);
static_assert(kServerMinPingInterval < kKeepaliveTime, "servers must accept the clients' pings");

// Channel arguments for a long-lived channel to a peer that may hang, vanish or restart:
// keepalive as above (HTTP/2 pings are allowed without data or calls), reconnect backoff from
// kInitialReconnectBackoff to kMaxReconnectBackoff, connection attempts given up after
// kMinConnectTimeout (a handshake needing longer would never complete). Add more arguments to
// the returned object freely.
grpc::ChannelArguments ResilientChannelArguments();

// Server side: accept keepalive pings every kServerMinPingInterval or slower, with or without
// calls, and never GOAWAY a client for pinging (no ping strikes).
void AddServerKeepaliveArguments(grpc::ServerBuilder& builder);

// The HTTP/2 settings above for a channel, and for a server.
void AddBulkTransferArguments(grpc::ChannelArguments& args);
void AddServerBulkTransferArguments(grpc::ServerBuilder& builder);

}  // namespace moe

#endif  // MOE_COMMON_RPC_CHANNEL_ARGUMENTS_H_
