#include "common/rpc/server_flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, model, "",
          "Required: Hugging Face checkpoint directory (config.json + safetensors)");
ABSL_FLAG(std::string, port_file, "", "If set, write the bound port to this file once serving");
ABSL_FLAG(std::string, tls_cert, "",
          "Serve TLS with this PEM certificate chain (with --tls_key); default: plaintext");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_ca, "",
          "Mutual TLS: callers must present a certificate signed by this PEM CA");
ABSL_FLAG(std::string, metrics_listen, "",
          "Serve Prometheus metrics on HTTP GET /metrics at this HOST:PORT (port 0 picks a free "
          "port); empty: no metrics");
ABSL_FLAG(std::string, metrics_port_file, "",
          "If set, write the bound metrics port to this file once serving");
ABSL_FLAG(int, drain_s, 5,
          "On SIGTERM or SIGINT: health NOT_SERVING at once, no new calls, calls in flight get "
          "this many seconds to finish (then they are cancelled), then exit");

namespace moe {

TlsFiles ServerTlsFlags() {
  TlsFiles tls;
  tls.cert = absl::GetFlag(FLAGS_tls_cert);
  tls.key = absl::GetFlag(FLAGS_tls_key);
  tls.ca = absl::GetFlag(FLAGS_tls_ca);
  return tls;
}

MetricsHttpServerOptions MetricsFlags() {
  return {absl::GetFlag(FLAGS_metrics_listen), absl::GetFlag(FLAGS_metrics_port_file)};
}

}  // namespace moe
