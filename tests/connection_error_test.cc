#include "common/rpc/connection_error.h"

#include "gtest/gtest.h"

namespace moe {
namespace {

TEST(WithoutAddressesTest, ReplacesEveryAddressGrpcWrites) {
  EXPECT_EQ(WithoutAddresses("failed to connect to all addresses; last error: UNKNOWN: "
                             "ipv4:10.0.0.7:50061: Failed to connect to remote host: "
                             "Connection refused"),
            "failed to connect to all addresses; last error: UNKNOWN: <address>: Failed to "
            "connect to remote host: Connection refused");
  EXPECT_EQ(WithoutAddresses("ipv6:[::1]:50061,unix:/run/shard.sock;(dns:shard-0:50061)"),
            "<address>,<address>;(<address>)");
  EXPECT_EQ(WithoutAddresses("peer ipv4:127.0.0.1:1\tclosed"), "peer <address>\tclosed");
}

TEST(WithoutAddressesTest, LeavesTextWithoutAnAddressAlone) {
  EXPECT_EQ(WithoutAddresses(""), "");
  EXPECT_EQ(WithoutAddresses("Socket closed"), "Socket closed");
  // A scheme with nothing after it names no address.
  EXPECT_EQ(WithoutAddresses("unknown scheme dns: or ipv4:"), "unknown scheme dns: or ipv4:");
}

// A local channel's failure to connect is explained in terms of this side's flags; the same words
// inside a status the server sent (a router's account of its shard) are the server's, and are
// passed on as they are: moe_client blamed its own --tls_ca for the router's shard TLS failure.
TEST(ExplainStatusTest, ExplainsOnlyThisSidesOwnConnectionFailure) {
  const grpc::Status local(grpc::StatusCode::UNAVAILABLE,
                           "failed to connect to all addresses; last error: UNKNOWN: "
                           "ipv4:127.0.0.1:5: Ssl handshake failed: SSL_ERROR_SSL: error:0A000086:"
                           "SSL routines::certificate verify failed");
  EXPECT_EQ(ExplainStatus(local, true, "--tls_"),
            "TLS handshake failed: the server's certificate is not signed by the CA --tls_ca "
            "names (or has expired) (" +
                local.error_message() + ")");
  const grpc::Status from_router(
      grpc::StatusCode::UNAVAILABLE,
      "experts 0-7 could not be computed: shard 127.0.0.1:5: TLS handshake failed: the server's "
      "certificate is not signed by the CA --shard_tls_ca names (or has expired) (failed to "
      "connect to all addresses; ... certificate verify failed)");
  EXPECT_EQ(ExplainStatus(from_router, false, "--tls_"), from_router.error_message());
}

// The name a DNS failure reports is the target's host:port and host, not the target itself.
TEST(WithoutTargetTest, ReplacesTheTargetInEveryFormGrpcWritesIt) {
  EXPECT_EQ(WithoutTarget("DNS resolution failed for shard-7.internal:50061: C-ares status is "
                          "not ARES_SUCCESS qtype=A name=shard-7.internal is_balancer=0",
                          "dns:///shard-7.internal:50061"),
            "DNS resolution failed for <shard>: C-ares status is not ARES_SUCCESS qtype=A "
            "name=<shard> is_balancer=0");
  EXPECT_EQ(
      WithoutTarget("shard dns:///shard-7.internal:50061: gone", "dns:///shard-7.internal:50061"),
      "shard <shard>: gone");
  EXPECT_EQ(WithoutTarget("x shard-0:1 y shard-0", "shard-0:1"), "x <shard> y <shard>");
  EXPECT_EQ(WithoutTarget("[::1]:5 ::1 refused", "ipv6:[::1]:5"), "<shard> <shard> refused");
  EXPECT_EQ(WithoutTarget("to ipv4:10.0.0.7:50061: refused", "10.0.0.8:50061"),
            "to <address>: refused");  // another address still goes
  EXPECT_EQ(WithoutTarget("unchanged", ""), "unchanged");
}

}  // namespace
}  // namespace moe
