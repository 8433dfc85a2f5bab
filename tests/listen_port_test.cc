#include "common/rpc/listen_port.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

TEST(OnlyThisHostCanReachTest, LoopbackAndUnixSocketsOnly) {
  for (const char* local : {"127.0.0.1:50051", "127.8.9.10:0", "localhost:50051", "[::1]:50051",
                            "unix:/run/moe/router.sock"}) {
    EXPECT_TRUE(OnlyThisHostCanReach(local)) << local;
  }
  for (const char* reachable : {"0.0.0.0:50051", "[::]:50051", "10.0.0.7:50061", "128.0.0.1:1",
                                "router.example:50051", "localhost.example:1", "50051"}) {
    EXPECT_FALSE(OnlyThisHostCanReach(reachable)) << reachable;
  }
}

TEST(PortInRangeTest, PortsBeyond65535AreRefusedNotWrapped) {
  for (const char* fine :
       {"127.0.0.1:0", "0.0.0.0:65535", "[::1]:50051", "unix:/tmp/a:99999", "localhost:http"}) {
    EXPECT_TRUE(PortInRange(fine)) << fine;
  }
  for (const char* wrapped :
       {"127.0.0.1:65536", "127.0.0.1:99999", "[::]:-1", "0.0.0.0:18446744073709551617"}) {
    EXPECT_FALSE(PortInRange(wrapped)) << wrapped;
  }
}

// gRPC would serve an address without a port on 443.
TEST(PortInRangeTest, AnAddressWithoutAPortIsRefused) {
  for (const char* portless : {"127.0.0.1", "127.0.0.1:", "[::1]", "localhost", "no-port"}) {
    EXPECT_FALSE(PortInRange(portless)) << portless;
  }
}

TEST(WhyCannotListenTest, NamesWhatTheKernelSaid) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  socklen_t length = sizeof(address);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length), 0);
  EXPECT_EQ(WhyCannotListen(absl::StrCat("127.0.0.1:", ntohs(address.sin_port))),
            "Address already in use");
  close(fd);
  EXPECT_EQ(WhyCannotListen("127.0.0.1"), "expected HOST:PORT");
}

}  // namespace
}  // namespace moe
