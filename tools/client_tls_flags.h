// The --tls_ca, --tls_cert, --tls_key and --tls_server_name flags of the client tools (moe_client,
// moe_health, moe_layer_bench), defined once here: whichever tool links this has them, with one
// meaning and one help text; and how those tools word a failed call.
#ifndef MOE_TOOLS_CLIENT_TLS_FLAGS_H_
#define MOE_TOOLS_CLIENT_TLS_FLAGS_H_

#include <grpcpp/grpcpp.h>

#include <string>

#include "common/rpc/tls_credentials.h"

namespace moe {

// The flags' values; plaintext when --tls_ca is empty (TlsFiles::enabled).
TlsFiles ClientTlsFlags();

// "INVALID_ARGUMENT: tokens has 3 dimensions, ...": the code's name, as the README's error table
// and grpc::StatusCode spell it (gRPC and absl::StatusCode share the numbering), then the message
// with a connection failure's cause (e.g. TLS, naming these flags) first (ExplainStatus).
std::string DescribeCallFailure(const grpc::Status& status);

}  // namespace moe

#endif  // MOE_TOOLS_CLIENT_TLS_FLAGS_H_
