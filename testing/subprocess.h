// Real server processes for end-to-end tests: start a binary of this build, learn the port it
// bound (--port_file), stop or kill it. Children die with the test process (PR_SET_PDEATHSIG),
// so a crashed test leaves nothing running.
#ifndef MOE_TESTING_SUBPROCESS_H_
#define MOE_TESTING_SUBPROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace moe::testing {

// Path of a binary of this build, e.g. BuildBinary("expert_service/moe_expert").
std::string BuildBinary(const std::string& relative);

class Subprocess {
 public:
  // Starts argv[0] with stdout and stderr appended to `log_path`.
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(const std::vector<std::string>& argv,
                                                           const std::string& log_path);
  ~Subprocess();  // SIGTERM, then SIGKILL after 5 s; always reaped

  // Sends `signal` and waits for the exit; returns the wait status.
  int Stop(int signal);
  bool Running();
  pid_t pid() const { return pid_; }
  std::string Log() const;

 private:
  Subprocess(pid_t pid, std::string log_path) : pid_(pid), log_path_(std::move(log_path)) {}
  pid_t pid_;
  std::string log_path_;
  bool reaped_ = false;
  int wait_status_ = 0;
};

// Sends SIGSTOP to `pid` and waits until every one of its threads is stopped: the signal takes
// effect asynchronously, and on a loaded machine threads went on for up to ~10 ms, long enough to
// answer a call sent "after" the stop. False if that has not happened within `timeout`.
bool StopAndAwaitStopped(pid_t pid, absl::Duration timeout = absl::Seconds(5));

// Runs a binary of this build (e.g. "tools/moe_health") to completion, killed after `timeout`;
// returns its exit code (-1 if killed or not started) and its output in `log`.
int RunTool(const std::string& tool, const std::vector<std::string>& args, std::string* log,
            absl::Duration timeout = absl::Seconds(30));

// A server binary started with --listen=127.0.0.1:0 --port_file=...: waits until it reports its
// port. Fails with its log if it exits first or takes longer than `timeout`.
struct Server {
  std::unique_ptr<Subprocess> process;
  int port = 0;
  std::string target() const { return "127.0.0.1:" + std::to_string(port); }
};
absl::StatusOr<Server> StartServer(const std::string& binary, std::vector<std::string> args,
                                   absl::Duration timeout = absl::Seconds(30));

}  // namespace moe::testing

#endif  // MOE_TESTING_SUBPROCESS_H_
