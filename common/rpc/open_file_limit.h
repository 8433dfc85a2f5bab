// How many file descriptors a server process may hold. Every client connection, shard channel
// and metrics scrape is one, and Linux's usual soft limit (1 024 under systemd and many shells)
// would refuse connections long before memory or cores run out, while the hard limit the
// administrator set is usually far higher. RaiseOpenFileLimitForServer() lifts the soft limit to
// the hard one, as Go's runtime does for every Go server; both servers call it at startup and log
// the change. Safe for the libraries in these processes: gRPC polls with epoll and cpp-httplib
// with poll(), neither with select(), whose descriptor sets end at 1 024.
//
// gRPC 1.51 has no limit on incoming connections of its own, so a flood of connections still
// ends at this limit; the metrics server holds at most 16 (metrics_http_server.h).
#ifndef MOE_COMMON_RPC_OPEN_FILE_LIMIT_H_
#define MOE_COMMON_RPC_OPEN_FILE_LIMIT_H_

#include "absl/strings/string_view.h"

namespace moe {

// Lifts RLIMIT_NOFILE's soft limit to its hard one. Logs "PROGRAM: open file limit raised from A
// to B" on stderr when it changed, or a warning naming the error when the limits cannot be read
// or set (the server runs on).
void RaiseOpenFileLimitForServer(absl::string_view program);

}  // namespace moe

#endif  // MOE_COMMON_RPC_OPEN_FILE_LIMIT_H_
