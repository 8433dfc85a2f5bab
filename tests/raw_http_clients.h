// Test helpers that drive an HTTP port on loopback with raw sockets, as misbehaving clients do:
// connections that send nothing, slow clients that send part of a request and wait, and a count of
// the connections the server (in this process) holds. Header-only.
#ifndef MOE_TESTS_RAW_HTTP_CLIENTS_H_
#define MOE_TESTS_RAW_HTTP_CLIENTS_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace moe::testing_http {

// Established TCP connections on local port `port` whose socket is a descriptor of this process:
// the server's side of its accepted connections (not the clients' sockets, nor connections the
// kernel completed that nobody accepted yet).
inline int AcceptedConnections(int port) {
  std::set<std::string> inodes;
  std::ifstream tcp("/proc/net/tcp");
  std::string line;
  std::getline(tcp, line);  // header
  while (std::getline(tcp, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state, skip, inode;
    fields >> slot >> local >> remote >> state;
    for (int i = 0; i < 5; ++i) fields >> skip;  // tx/rx queues, timer, retransmits, uid, timeout
    fields >> inode;
    if (state == "01" && std::stoi(local.substr(local.find(':') + 1), nullptr, 16) == port) {
      inodes.insert(absl::StrCat("socket:[", inode, "]"));
    }
  }
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code error;
    const std::filesystem::path target = std::filesystem::read_symlink(entry.path(), error);
    if (!error && inodes.count(target.string()) > 0) ++count;
  }
  return count;
}

// `count` sockets connecting to 127.0.0.1:port that never send a byte.
inline std::vector<int> ConnectSilently(int port, int count) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::vector<int> sockets;
  for (int i = 0; i < count; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) break;
    connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address));  // EINPROGRESS
    sockets.push_back(fd);
  }
  return sockets;
}

// `count` loopback clients of an HTTP port that each connect, send `sent` (the start of a request)
// and then nothing, keeping the connection open; when the server closes one, it connects again
// and does the same. Driven by Step() from the test's thread (no thread of its own); every socket
// is closed by the destructor.

class SlowHttpClients {
 public:
  SlowHttpClients(int port, int count, std::string sent)
      : port_(port), sent_(std::move(sent)), clients_(static_cast<size_t>(count)) {}
  SlowHttpClients(const SlowHttpClients&) = delete;
  SlowHttpClients& operator=(const SlowHttpClients&) = delete;
  ~SlowHttpClients() {
    for (Client& client : clients_) {
      if (client.fd >= 0) close(client.fd);
    }
  }

  // One round: connects the clients that have no connection, sends `sent` on those that just
  // connected, and waits up to `wait_ms` for the server to close or answer any,
  // which count in closed_by_server() and reconnect on the next round.
  void Step(int wait_ms) {
    std::vector<pollfd> watched;
    std::vector<Client*> owners;
    for (Client& client : clients_) {
      if (client.fd < 0) Connect(client);
      if (client.fd < 0) continue;  // no descriptor now; tried again next round
      watched.push_back({client.fd, static_cast<short>(client.sent ? POLLIN : POLLOUT), 0});
      owners.push_back(&client);
    }
    if (poll(watched.data(), watched.size(), wait_ms) <= 0) return;
    for (size_t i = 0; i < watched.size(); ++i) {
      Client& client = *owners[i];
      const short events = watched[i].revents;
      if (events == 0) continue;
      if (!client.sent && (events & POLLOUT) != 0 && (events & (POLLERR | POLLHUP)) == 0) {
        // Once connected, `sent` (well under a socket buffer) goes whole.
        if (send(client.fd, sent_.data(), sent_.size(), MSG_NOSIGNAL) > 0) {
          client.sent = true;
          ++holding_;
        }
        continue;
      }
      char reply[256];
      const ssize_t got = recv(client.fd, reply, sizeof(reply), MSG_DONTWAIT);
      if (got > 0 || (got < 0 && errno == EAGAIN)) continue;  // an answer (400): wait for close
      if (client.sent) {
        --holding_;
        ++closed_by_server_;
      }
      close(client.fd);
      client = Client();
    }
  }

  // Clients connected that have sent `sent` and not seen the connection closed.
  int holding() const { return holding_; }
  // Connections closed by the server after `sent`.
  int64_t closed_by_server() const { return closed_by_server_; }

 private:
  struct Client {
    int fd = -1;
    bool sent = false;
  };

  void Connect(Client& client) {
    client.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (client.fd < 0) return;
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port_));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connect(client.fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address));
  }

  const int port_;
  const std::string sent_;
  std::vector<Client> clients_;
  int holding_ = 0;
  int64_t closed_by_server_ = 0;
};

}  // namespace moe::testing_http

#endif  // MOE_TESTS_RAW_HTTP_CLIENTS_H_
