#include "tools/client_tls_flags.h"

#include <string>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "common/rpc/connection_error.h"

ABSL_FLAG(std::string, tls_ca, "", "Connect over TLS, trusting this PEM CA (default: plaintext)");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM client certificate for servers that require one (mutual TLS; with --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_server_name, "",
          "Name to expect in the server's certificate instead of the target's host");

namespace moe {

TlsFiles ClientTlsFlags() {
  TlsFiles tls;
  tls.ca = absl::GetFlag(FLAGS_tls_ca);
  tls.cert = absl::GetFlag(FLAGS_tls_cert);
  tls.key = absl::GetFlag(FLAGS_tls_key);
  tls.server_name = absl::GetFlag(FLAGS_tls_server_name);
  return tls;
}

std::string DescribeCallFailure(const grpc::Status& status) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())) + ": " +
         ExplainStatus(status, ClientTlsFlags().enabled(), "--tls_");
}

}  // namespace moe
