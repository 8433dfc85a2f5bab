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
