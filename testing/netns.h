// A network namespace joined to this host by a veth pair, for tests of network partitions.
//
//   host side 10.200.X.Y+1/30  <── veth ──>  10.200.X.Y+2/30  inside namespace moe-part-PID-N
//
// X.Y is a /30 of 10.200.0.0/16 that no interface of this host uses yet; only the two addresses
// of the pair are assigned, nothing else on the host changes. Processes started with Command()
// run inside the namespace. Partition() drops every packet entering or leaving the namespace
// (iptables DROP inside it: silent, no RST, like a dead switch); Heal() removes the rules.
//
// The destructor kills what still runs in the namespace and deletes it (with the pair), also
// when a test fails; Create() first deletes namespaces this harness left behind for processes
// that no longer exist (a test killed with SIGKILL). Needs root, iproute2 and iptables.
// Not thread-safe.
#ifndef MOE_TESTING_NETNS_H_
#define MOE_TESTING_NETNS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace moe::testing {

// Runs argv[0] (an absolute path) and waits (at most 30 s); its output goes into the error of a
// non-zero exit.
absl::Status RunCommand(const std::vector<std::string>& argv);

class NetworkNamespace {
 public:
  // OK if namespaces can be created here, or why not (not root, no ip / iptables, no kernel
  // support), checked by creating and deleting one.
  static absl::Status Available();

  static absl::StatusOr<std::unique_ptr<NetworkNamespace>> Create();
  ~NetworkNamespace();
  NetworkNamespace(const NetworkNamespace&) = delete;
  NetworkNamespace& operator=(const NetworkNamespace&) = delete;

  const std::string& name() const { return name_; }
  const std::string& host_address() const { return host_address_; }      // this side of the pair
  const std::string& inside_address() const { return inside_address_; }  // the namespace's

  // argv prefixed so that it runs inside the namespace (ip netns exec NAME ...).
  std::vector<std::string> Command(const std::vector<std::string>& argv) const;

  absl::Status Partition();
  absl::Status Heal();

 private:
  NetworkNamespace(std::string name, std::string veth, std::string host, std::string inside)
      : name_(std::move(name)),
        veth_(std::move(veth)),
        host_address_(std::move(host)),
        inside_address_(std::move(inside)) {}

  std::string name_;
  std::string veth_;  // host end; the other end lives (and dies) in the namespace
  std::string host_address_;
  std::string inside_address_;
};

}  // namespace moe::testing

#endif  // MOE_TESTING_NETNS_H_
