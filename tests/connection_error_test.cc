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

}  // namespace
}  // namespace moe
