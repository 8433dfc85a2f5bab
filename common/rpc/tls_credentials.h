// gRPC credentials from PEM files, for every server and client of the project.
//
// TlsFiles holds paths as the command line gives them. All empty means plaintext (for loopback
// development); otherwise TLS, and:
//   server side: cert + key are required; with a CA, clients must present a certificate signed by
//                it (mutual TLS, GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY).
//   client side: the CA verifies the server (empty: the system roots); cert + key, if given, are
//                presented to servers that require a client certificate; server_name overrides
//                the name checked against the server certificate's SAN (default: the target host).
// Errors are InvalidArgument and name the flag and the file: a file missing, unreadable or not
// PEM, a certificate or key that does not parse (OpenSSL), a key that is not the certificate's,
// or only one of cert/key. The files are read once, at creation (no reloading: restart the
// process to rotate certificates). Functions are thread-safe.
#ifndef MOE_COMMON_RPC_TLS_CREDENTIALS_H_
#define MOE_COMMON_RPC_TLS_CREDENTIALS_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace moe {

struct TlsFiles {
  std::string cert;         // PEM certificate chain this side presents
  std::string key;          // PEM private key of `cert`
  std::string ca;           // PEM CA certificate(s) the peer's certificate must chain to
  std::string server_name;  // client side only: expected server name, if not the target host
  // Flag names for error messages, e.g. "--shard_tls_" gives "--shard_tls_cert".
  std::string flag_prefix = "--tls_";

  bool enabled() const { return !cert.empty() || !key.empty() || !ca.empty(); }
};

// Null for plaintext (no TLS files), as ServeOptions::credentials takes it: the server then
// warns when other machines may reach its address.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files);

// Credentials plus the channel arguments they need; pass both to grpc::CreateCustomChannel.
struct ChannelSecurity {
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  std::string server_name;  // non-empty: SSL target name override
  bool tls = false;
  std::string flag_prefix = "--tls_";  // TlsFiles::flag_prefix, for error messages

  // Insecure credentials: plaintext for loopback development.
  static ChannelSecurity Plaintext();
  // Adds the target name override (if any) to `args`.
  void Apply(grpc::ChannelArguments* args) const;
};

absl::StatusOr<ChannelSecurity> MakeChannelSecurity(const TlsFiles& files);

// For start-up log lines: "plaintext", "TLS" or "mutual TLS" (server side: a CA requires client
// certificates; client side: a certificate is presented).
const char* ServerTlsMode(const TlsFiles& files);
const char* ClientTlsMode(const TlsFiles& files);

// Reads a PEM file named by `flag`; InvalidArgument naming flag and path when it cannot be read
// or holds no "-----BEGIN `kind`" block (kind: "CERTIFICATE", or "PRIVATE KEY" for any key).
absl::StatusOr<std::string> ReadPemFile(const std::string& path, const std::string& flag,
                                        const std::string& kind);

}  // namespace moe

#endif  // MOE_COMMON_RPC_TLS_CREDENTIALS_H_
