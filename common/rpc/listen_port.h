// What a listen address means: whether its port is one at all, the reason it cannot be bound
// (gRPC's ServerBuilder only says that it failed), and whether only this host can reach it.
#ifndef MOE_COMMON_RPC_LISTEN_PORT_H_
#define MOE_COMMON_RPC_LISTEN_PORT_H_

#include <string>

#include "absl/status/status.h"

namespace moe {

// False when `listen` ends in ":N" with N outside 0-65535, which gRPC would silently take modulo
// 65536 (":99999" served on port 34463), or names no port ("127.0.0.1", "[::1]", "host:"), for
// which gRPC would serve on 443. Unix sockets (unix:PATH) have no port: true.
bool PortInRange(const std::string& listen);
// OK, or InvalidArgument "--listen=127.0.0.1: expected HOST:PORT ..." unless PortInRange: for a
// binary's main() to check before anything slow (loading a model) runs.
absl::Status CheckListenFlag(const std::string& listen);

// Why `listen` (HOST:PORT, HOST a numeric IPv4 or [IPv6] address) cannot be bound, e.g.
// "Address already in use", found by binding a plain socket to it; a generic hint when HOST is
// a name or binding now succeeds.
std::string WhyCannotListen(const std::string& listen);

// True when only this host can connect to `listen`: a Unix socket (unix:PATH), localhost,
// 127.0.0.0/8 or [::1]. Every other address (0.0.0.0, [::], an interface's address, a name) may
// be reachable from other machines.
bool OnlyThisHostCanReach(const std::string& listen);

}  // namespace moe

#endif  // MOE_COMMON_RPC_LISTEN_PORT_H_
