// The flags moe_router and moe_expert share, defined once here with one meaning and one help text
// (as tools/client_tls_flags.h does for the client tools): --model, --port_file, --tls_cert,
// --tls_key, --tls_ca, --metrics_listen, --metrics_port_file and --drain_s. A server links
// moe_server_flags and defines the rest itself (--listen, --layers and others differ between the
// two in default or wording). Read them after moe::ParseFlags.
#ifndef MOE_COMMON_RPC_SERVER_FLAGS_H_
#define MOE_COMMON_RPC_SERVER_FLAGS_H_

#include <string>

#include "absl/flags/declare.h"
#include "common/metrics/metrics_http_server.h"
#include "common/rpc/tls_credentials.h"

ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(std::string, port_file);
ABSL_DECLARE_FLAG(int, drain_s);

namespace moe {

// --tls_cert, --tls_key and --tls_ca, as MakeServerCredentials takes them (all empty: plaintext).
TlsFiles ServerTlsFlags();
// --metrics_listen and --metrics_port_file: no metrics server when --metrics_listen is empty.
MetricsHttpServerOptions MetricsFlags();

}  // namespace moe

#endif  // MOE_COMMON_RPC_SERVER_FLAGS_H_
