#include "common/rpc/connection_error.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace moe {

std::string ConnectionFailureCause(const grpc::Status& status, bool tls,
                                   const std::string& flag_prefix) {
  if (status.error_code() != grpc::StatusCode::UNAVAILABLE) return "";
  const std::string& message = status.error_message();
  const std::string lower = absl::AsciiStrToLower(message);
  // OpenSSL says "certificate verify failed"; BoringSSL "CERTIFICATE_VERIFY_FAILED".
  if (absl::StrContains(lower, "certificate verify failed") ||
      absl::StrContains(lower, "certificate_verify_failed")) {
    return absl::StrCat("TLS handshake failed: the server's certificate is not signed by the CA ",
                        flag_prefix, "ca names (or has expired)");
  }
  if (absl::StrContains(message, "is not in peer certificate")) {
    return absl::StrCat(
        "TLS handshake failed: the server's certificate does not name the host "
        "dialled; give ",
        flag_prefix, "server_name a name from its subjectAltName");
  }
  if (absl::StrContains(lower, "wrong version number") ||
      absl::StrContains(lower, "packet length too long")) {
    return "TLS handshake failed: the server does not speak TLS (is it running plaintext?)";
  }
  if (absl::StrContains(lower, "handshake failed")) {
    return "TLS handshake failed";
  }
  const bool connecting = absl::StrContains(message, "failed to connect to all addresses") ||
                          absl::StrContains(message, "connections to all backends failing");
  if (connecting && absl::StrContains(message, "Socket closed")) {
    // The peer accepted the TCP connection and closed it before HTTP/2 started.
    if (tls) {
      return absl::StrCat(
          "TLS handshake failed: the server closed the connection; it probably requires a client "
          "certificate signed by its CA, and ",
          flag_prefix, "cert presents none or one it does not accept");
    }
    return absl::StrCat(
        "the server closed the connection before HTTP/2 started; it may require TLS (give ",
        flag_prefix, "ca)");
  }
  return "";
}

std::string ExplainStatus(const grpc::Status& status, bool tls, const std::string& flag_prefix) {
  if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED && status.error_message().empty()) {
    // What gRPC answers for a service the server does not have, in no words at all.
    return "the server does not offer this method: is the target another kind of server (a "
           "shard where a router was meant, or the reverse)?";
  }
  const std::string cause = ConnectionFailureCause(status, tls, flag_prefix);
  if (cause.empty()) return status.error_message();
  return absl::StrCat(cause, " (", status.error_message(), ")");
}

std::string WithoutAddresses(absl::string_view text) {
  constexpr absl::string_view kSchemes[] = {"ipv4:", "ipv6:", "unix:", "dns:"};
  constexpr absl::string_view kEnds = " \t\n\r\f\v,;()";
  std::string out;
  out.reserve(text.size());
  while (!text.empty()) {
    size_t address_length = 0;
    for (absl::string_view scheme : kSchemes) {
      if (!absl::StartsWith(text, scheme)) continue;
      const size_t end = text.find_first_of(kEnds, scheme.size());
      size_t length = end == absl::string_view::npos ? text.size() : end;
      while (length > scheme.size() && text[length - 1] == ':') --length;  // "ipv4:...:50061: ..."
      if (length > scheme.size()) address_length = length;  // a scheme alone is not an address
      break;
    }
    if (address_length > 0) {
      out += "<address>";
      text.remove_prefix(address_length);
    } else {
      out += text.front();
      text.remove_prefix(1);
    }
  }
  return out;
}

}  // namespace moe
