// Plain-words causes of gRPC connection failures, TLS first. gRPC reports a failed connection as
// "failed to connect to all addresses; last error: ..." (or "connections to all backends failing;
// ...") followed by the transport's own words (OpenSSL's, for TLS), and a server that rejects a
// client certificate shows up only as "Socket closed". This turns those into a cause a user can
// act on, naming the flags to check (`flag_prefix`, e.g. "--shard_tls_" → "--shard_tls_ca").
// It also takes the addresses out of gRPC's messages, for answers that must not show the topology.
#ifndef MOE_COMMON_RPC_CONNECTION_ERROR_H_
#define MOE_COMMON_RPC_CONNECTION_ERROR_H_

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/strings/string_view.h"

namespace moe {

// The cause of `status` if it is a failure of this side's own channel to connect that this
// recognises (gRPC's words start the message; a status the server sent, e.g. a router's about
// its shards, is the server's account and gets none), else "". `tls`: whether this side
// connected with TLS. The cause never contains an address.
std::string ConnectionFailureCause(const grpc::Status& status, bool tls,
                                   const std::string& flag_prefix);

// `text` with every address gRPC's messages carry ("ipv4:10.0.0.7:50061", "ipv6:[::1]:50061",
// "unix:/run/shard.sock", "dns:shard-0:50061") replaced by "<address>": an address runs from its
// scheme to the next space, ',', ';', '(' or ')', less a trailing ':'. For messages that must not
// reveal the topology.
std::string WithoutAddresses(absl::string_view text);

// `problem` (a shard's, in gRPC's words) without its gRPC `target` in any form gRPC writes it:
// whole, as host:port without the scheme ("dns:///shard-0.internal:50061": a DNS failure names
// "shard-0.internal:50061") and as the bare host (c-ares: "name=shard-0.internal"), each replaced
// by "<shard>"; then WithoutAddresses. For an Info that must not reveal the topology.
std::string WithoutTarget(absl::string_view problem, absl::string_view target);

// `status`'s message, prefixed with its cause when there is one: "<cause> (<message>)"; for
// gRPC's wordless UNIMPLEMENTED (a method the server does not have), what that likely means.
std::string ExplainStatus(const grpc::Status& status, bool tls, const std::string& flag_prefix);

}  // namespace moe

#endif  // MOE_COMMON_RPC_CONNECTION_ERROR_H_
