#include "testing/netns.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace moe::testing {
namespace {

constexpr char kPrefix[] = "moe-part-";

std::string FindTool(const std::string& name) {
  for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
    const std::string path = dir + name;
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

const std::string& Ip() {
  static const std::string* path = new std::string(FindTool("ip"));
  return *path;
}

const std::string& Iptables() {
  static const std::string* path = new std::string(FindTool("iptables"));
  return *path;
}

// Runs argv and returns its exit status and output (stdout and stderr), at most 30 s.
std::pair<int, std::string> Run(const std::vector<std::string>& argv) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return {-1, "pipe failed"};
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return {-1, "fork failed"};
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(fds[1]);
  std::string output;
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  char buffer[4096];
  while (absl::Now() < give_up) {
    pollfd p{fds[0], POLLIN, 0};
    const int ready = poll(&p, 1, 100);
    if (ready < 0 && errno != EINTR) break;
    if (ready <= 0) continue;
    const ssize_t n = read(fds[0], buffer, sizeof(buffer));
    if (n <= 0) break;  // EOF: the command closed its output
    output.append(buffer, n);
  }
  close(fds[0]);
  if (absl::Now() >= give_up) kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), output};
}

// Every IPv4 network of 10.200.0.0/16 this host has an address or route in, as [first, last].
std::vector<std::pair<uint32_t, uint32_t>> UsedRanges() {
  std::vector<std::pair<uint32_t, uint32_t>> used;
  for (const auto& argv : {std::vector<std::string>{Ip(), "-4", "-o", "addr", "show"},
                           std::vector<std::string>{Ip(), "-4", "route", "show", "table", "all"}}) {
    for (absl::string_view word : absl::StrSplit(Run(argv).second, absl::ByAnyChar(" \n\t"))) {
      if (!absl::StartsWith(word, "10.200.")) continue;
      std::vector<absl::string_view> parts = absl::StrSplit(word, absl::ByAnyChar("./"));
      uint32_t a = 0, b = 0, len = 32;
      if (parts.size() < 4 || !absl::SimpleAtoi(parts[2], &a) || !absl::SimpleAtoi(parts[3], &b)) {
        continue;
      }
      if (parts.size() > 4 && !absl::SimpleAtoi(parts[4], &len)) len = 32;
      len = std::max<uint32_t>(16, std::min<uint32_t>(32, len));
      const uint32_t host = (a << 8) | b;  // offset inside 10.200.0.0/16
      const uint32_t size = 1u << (32 - len);
      used.push_back({host & ~(size - 1), (host & ~(size - 1)) + size - 1});
    }
  }
  return used;
}

// Deletes namespaces of this harness whose creating process is gone.
void RemoveStaleNamespaces() {
  for (absl::string_view line : absl::StrSplit(Run({Ip(), "netns", "list"}).second, '\n')) {
    const std::string name(line.substr(0, line.find(' ')));
    if (!absl::StartsWith(name, kPrefix)) continue;
    std::vector<absl::string_view> parts = absl::StrSplit(name.substr(strlen(kPrefix)), '-');
    int pid = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &pid)) continue;
    if (kill(pid, 0) == 0 || errno != ESRCH) continue;
    for (absl::string_view p : absl::StrSplit(Run({Ip(), "netns", "pids", name}).second, '\n')) {
      int victim = 0;
      if (absl::SimpleAtoi(p, &victim) && victim > 1) kill(victim, SIGKILL);
    }
    Run({Ip(), "netns", "del", name});
  }
}

}  // namespace

absl::Status RunCommand(const std::vector<std::string>& argv) {
  auto [status, output] = Run(argv);
  if (status == 0) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat("`", absl::StrJoin(argv, " "), "` exited with ", status, ": ", output));
}

absl::Status NetworkNamespace::Available() {
  if (geteuid() != 0) return absl::FailedPreconditionError("network namespaces need root");
  if (Ip().empty()) return absl::FailedPreconditionError("no `ip` (Debian package iproute2)");
  if (Iptables().empty()) return absl::FailedPreconditionError("no `iptables` (package iptables)");
  const std::string probe = absl::StrCat(kPrefix, "probe", getpid());
  absl::Status added = RunCommand({Ip(), "netns", "add", probe});
  if (!added.ok()) return added;
  absl::Status filter = RunCommand({Ip(), "netns", "exec", probe, Iptables(), "-w", "-L", "-n"});
  absl::Status deleted = RunCommand({Ip(), "netns", "del", probe});
  return filter.ok() ? deleted : filter;
}

absl::StatusOr<std::unique_ptr<NetworkNamespace>> NetworkNamespace::Create() {
  static std::atomic<int> counter{0};
  RemoveStaleNamespaces();
  const int n = counter.fetch_add(1);
  const std::string pid = std::to_string(getpid());
  // A /30 of 10.200.0.0/16 no interface or route uses, starting at a place set by pid and n so
  // that parallel test processes start apart; 16384 candidates, all checked at most once.
  const auto used = UsedRanges();
  const uint32_t start = (static_cast<uint32_t>(getpid()) * 131u + n * 7u) % 16384u;
  uint32_t net = 0;
  bool found = false;
  for (uint32_t i = 0; i < 16384 && !found; ++i) {
    net = ((start + i) % 16384u) * 4u;
    if (net == 0) continue;  // 10.200.0.0/30: keep clear of the network address of the /16
    found = true;
    for (const auto& [first, last] : used) {
      if (net <= last && net + 3 >= first) found = false;
    }
  }
  if (!found) return absl::ResourceExhaustedError("no free /30 in 10.200.0.0/16");
  auto address = [net](int offset) {
    return absl::StrCat("10.200.", (net + offset) >> 8, ".", (net + offset) & 255);
  };
  std::unique_ptr<NetworkNamespace> ns(new NetworkNamespace(
      absl::StrCat(kPrefix, pid, "-", n), absl::StrCat("mp", pid, "h", n), address(1), address(2)));
  // From here on the destructor undoes whatever part was set up.
  const std::string inside_veth = absl::StrCat("mp", pid, "n", n);
  const std::vector<std::vector<std::string>> steps = {
      {Ip(), "netns", "add", ns->name_},
      {Ip(), "link", "add", ns->veth_, "type", "veth", "peer", "name", inside_veth},
      {Ip(), "link", "set", inside_veth, "netns", ns->name_},
      {Ip(), "addr", "add", ns->host_address_ + "/30", "dev", ns->veth_},
      {Ip(), "link", "set", ns->veth_, "up"},
      ns->Command({Ip(), "addr", "add", ns->inside_address_ + "/30", "dev", inside_veth}),
      ns->Command({Ip(), "link", "set", inside_veth, "up"}),
      ns->Command({Ip(), "link", "set", "lo", "up"}),
  };
  for (const auto& step : steps) {
    absl::Status done = RunCommand(step);
    if (!done.ok()) return done;
  }
  return ns;
}

NetworkNamespace::~NetworkNamespace() {
  for (absl::string_view p : absl::StrSplit(Run({Ip(), "netns", "pids", name_}).second, '\n')) {
    int pid = 0;
    if (absl::SimpleAtoi(p, &pid) && pid > 1) kill(pid, SIGKILL);
  }
  Run({Ip(), "link", "del", veth_});
  Run({Ip(), "netns", "del", name_});
}

std::vector<std::string> NetworkNamespace::Command(const std::vector<std::string>& argv) const {
  std::vector<std::string> command = {Ip(), "netns", "exec", name_};
  command.insert(command.end(), argv.begin(), argv.end());
  return command;
}

absl::Status NetworkNamespace::Partition() {
  for (const char* chain : {"INPUT", "OUTPUT"}) {
    absl::Status added = RunCommand(Command({Iptables(), "-w", "-A", chain, "-j", "DROP"}));
    if (!added.ok()) return added;
  }
  return absl::OkStatus();
}

absl::Status NetworkNamespace::Heal() {
  for (const char* chain : {"INPUT", "OUTPUT"}) {
    absl::Status removed = RunCommand(Command({Iptables(), "-w", "-D", chain, "-j", "DROP"}));
    if (!removed.ok()) return removed;
  }
  return absl::OkStatus();
}

}  // namespace moe::testing
