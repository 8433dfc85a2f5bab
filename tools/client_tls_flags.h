// The --tls_ca, --tls_cert, --tls_key and --tls_server_name flags of the client tools (moe_client,
// moe_health, moe_layer_bench), defined once here: whichever tool links this has them, with one
// meaning and one help text.
#ifndef MOE_TOOLS_CLIENT_TLS_FLAGS_H_
#define MOE_TOOLS_CLIENT_TLS_FLAGS_H_

#include "common/rpc/tls_credentials.h"

namespace moe {

// The flags' values; plaintext when --tls_ca is empty (TlsFiles::enabled).
TlsFiles ClientTlsFlags();

}  // namespace moe

#endif  // MOE_TOOLS_CLIENT_TLS_FLAGS_H_
