#include "common/rpc/listen_port.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace moe {
namespace {

constexpr char kHint[] = "address in use, or not an address of this host (see gRPC's log above)";

// errno of binding a fresh socket (without SO_REUSEPORT) to the address, or 0.
int BindErrno(const sockaddr* address, socklen_t length) {
  const int fd = socket(address->sa_family, SOCK_STREAM, 0);
  if (fd < 0) return errno;
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));  // as gRPC does
  const int error = bind(fd, address, length) == 0 ? 0 : errno;
  close(fd);
  return error;
}

}  // namespace

bool PortInRange(const std::string& listen) {
  if (absl::StartsWith(listen, "unix:")) return true;
  const size_t colon = listen.rfind(':');
  // No port at all ("127.0.0.1", "[::1]", "host:"): gRPC would serve on https's 443.
  if (colon == std::string::npos || colon + 1 == listen.size() || listen.back() == ']') {
    return false;
  }
  const std::string port = listen.substr(colon + 1);
  // Not a number (a service name): gRPC resolves it or fails, naming it.
  if (port.find_first_not_of("-0123456789") != std::string::npos) return true;
  int64_t number = 0;
  return absl::SimpleAtoi(port, &number) && number >= 0 && number <= 65535;
}

absl::Status CheckListenFlag(const std::string& listen) {
  if (PortInRange(listen)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "--listen=", listen, ": expected HOST:PORT with a port from 0 to 65535 (0: any free port)"));
}

std::string WhyCannotListen(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return "expected HOST:PORT";
  }
  std::string host = listen.substr(0, colon);
  int error = 0;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    sockaddr_in6 a6{};
    a6.sin6_family = AF_INET6;
    a6.sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &a6.sin6_addr) != 1) {
      return kHint;
    }
    error = BindErrno(reinterpret_cast<sockaddr*>(&a6), sizeof(a6));
  } else {
    sockaddr_in a4{};
    a4.sin_family = AF_INET;
    a4.sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, host.c_str(), &a4.sin_addr) != 1) return kHint;
    error = BindErrno(reinterpret_cast<sockaddr*>(&a4), sizeof(a4));
  }
  return error == 0 ? kHint : std::strerror(error);
}

bool OnlyThisHostCanReach(const std::string& listen) {
  if (absl::StartsWith(listen, "unix:")) return true;
  const absl::string_view host = absl::string_view(listen).substr(0, listen.rfind(':'));
  if (host == "localhost" || host == "[::1]") return true;
  in_addr a4{};
  const std::string ipv4(host);
  return inet_pton(AF_INET, ipv4.c_str(), &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

}  // namespace moe
