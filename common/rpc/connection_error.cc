#include "common/rpc/connection_error.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"

namespace moe {

std::string ConnectionFailureCause(const grpc::Status& status, bool tls,
                                   const std::string& flag_prefix) {
  if (status.error_code() != grpc::StatusCode::UNAVAILABLE) return "";
  const std::string& message = status.error_message();
  // This side's channel failing to connect: gRPC's own words start the message. A status the
  // server sent (a router's about its shards: "experts 4-7 could not be computed: shard ...: TLS
  // handshake failed ...") is the server's account, not a failure of this side's flags.
  constexpr absl::string_view kLocalFailures[] = {"failed to connect to all addresses",
                                                  "connections to all backends failing"};
  if (std::none_of(std::begin(kLocalFailures), std::end(kLocalFailures),
                   [&](absl::string_view start) { return absl::StartsWith(message, start); })) {
    return "";
  }
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

std::string WithoutTarget(absl::string_view problem, absl::string_view target) {
  // "dns:///host:port", "dns://authority/host:port", "dns:host:port", "ipv4:host:port", ... or
  // "host:port".
  absl::string_view host_port = target;
  if (const size_t slashes = host_port.find("://"); slashes != absl::string_view::npos) {
    host_port.remove_prefix(slashes + 3);
    host_port.remove_prefix(std::min(host_port.size(), host_port.find('/') + 1));
  } else {
    for (absl::string_view scheme : {"dns:", "ipv4:", "ipv6:", "unix:"}) {
      if (absl::ConsumePrefix(&host_port, scheme)) break;
    }
  }
  absl::string_view host = host_port.substr(0, host_port.rfind(':'));
  if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]")) {
    host = host.substr(1, host.size() - 2);
  }
  std::vector<std::pair<absl::string_view, absl::string_view>> forms;
  for (absl::string_view form : {target, host_port, host}) {
    if (!form.empty()) forms.emplace_back(form, "<shard>");
  }
  // One pass, the longest form where several start at one place: "<shard>" is not rewritten.
  return WithoutAddresses(absl::StrReplaceAll(problem, forms));
}

}  // namespace moe
