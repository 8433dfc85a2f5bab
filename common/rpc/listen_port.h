// Small helpers around a server's listening port: the port file scripts and tests read, and the
// reason an address cannot be bound (gRPC's ServerBuilder only says that it failed).
#ifndef MOE_COMMON_RPC_LISTEN_PORT_H_
#define MOE_COMMON_RPC_LISTEN_PORT_H_

#include <string>

#include "absl/status/status.h"

namespace moe {

// Writes "PORT\n" to `path` atomically (a temporary file renamed), so a reader never sees a
// partial number.
absl::Status WritePortFile(const std::string& path, int port);

// Why `listen` (HOST:PORT, HOST a numeric IPv4 or [IPv6] address) cannot be bound, e.g.
// "Address already in use", found by binding a plain socket to it; a generic hint when HOST is
// a name or binding now succeeds.
std::string WhyCannotListen(const std::string& listen);

}  // namespace moe

#endif  // MOE_COMMON_RPC_LISTEN_PORT_H_
