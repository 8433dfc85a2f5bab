#include "testing/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "testing/test_models.h"

namespace moe::testing {

std::string BuildBinary(const std::string& relative) {
  // Test binaries live in BUILD/tests/; servers and tools in BUILD/<folder>/.
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe");
  return (self.parent_path().parent_path() / relative).string();
}

absl::StatusOr<std::unique_ptr<Subprocess>> Subprocess::Start(const std::vector<std::string>& argv,
                                                              const std::string& log_path) {
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
      close(fd);
    }
    // The test process may block signals in its threads; the server must start clean.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  return std::unique_ptr<Subprocess>(new Subprocess(pid, log_path));
}

Subprocess::~Subprocess() {
  if (!reaped_ && Running()) {
    kill(pid_, SIGTERM);
    for (int i = 0; i < 50 && Running(); ++i) usleep(100 * 1000);
    if (Running()) Stop(SIGKILL);
  }
}

bool Subprocess::Running() {
  if (reaped_) return false;
  if (waitpid(pid_, &wait_status_, WNOHANG) == pid_) reaped_ = true;
  return !reaped_;
}

int Subprocess::Stop(int signal) {
  if (Running()) {
    kill(pid_, signal);
    waitpid(pid_, &wait_status_, 0);
    reaped_ = true;
  }
  return wait_status_;
}

bool StopAndAwaitStopped(pid_t pid, absl::Duration timeout) {
  if (kill(pid, SIGSTOP) != 0) return false;
  const std::string tasks = absl::StrCat("/proc/", pid, "/task");
  const absl::Time give_up = absl::Now() + timeout;
  while (absl::Now() < give_up) {
    bool all_stopped = true;
    std::error_code error;
    for (const auto& task : std::filesystem::directory_iterator(tasks, error)) {
      std::ifstream in(task.path() / "stat");
      std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      const size_t name_end = stat.rfind(')');  // the state follows the command name
      const char state = name_end + 2 < stat.size() ? stat[name_end + 2] : '?';
      if (state != 'T' && state != 't') all_stopped = false;
    }
    if (!error && all_stopped) return true;
    absl::SleepFor(absl::Milliseconds(1));  // the kernel offers no event for "stopped"
  }
  return false;
}

int RunTool(const std::string& tool, const std::vector<std::string>& args, std::string* log,
            absl::Duration timeout) {
  std::vector<std::string> argv = {BuildBinary(tool)};
  argv.insert(argv.end(), args.begin(), args.end());
  auto process = Subprocess::Start(argv, MakeTempDir("tool") + "/log");
  if (!process.ok()) {
    *log = std::string(process.status().message());
    return -1;
  }
  const absl::Time give_up = absl::Now() + timeout;
  while ((*process)->Running() && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(20));
  const int status = (*process)->Stop(SIGKILL);
  *log = (*process)->Log();
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string Subprocess::Log() const {
  std::ifstream in(log_path_);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::StatusOr<Server> StartServer(const std::string& binary, std::vector<std::string> args,
                                   absl::Duration timeout) {
  const std::string dir = MakeTempDir("server");
  const std::string port_file = dir + "/port";
  std::vector<std::string> argv = {binary, "--listen=127.0.0.1:0", "--port_file=" + port_file};
  argv.insert(argv.end(), args.begin(), args.end());
  Server server;
  auto process = Subprocess::Start(argv, dir + "/log");
  if (!process.ok()) return process.status();
  server.process = std::move(*process);
  const absl::Time give_up = absl::Now() + timeout;
  while (absl::Now() < give_up) {
    std::ifstream in(port_file);
    std::string text;
    if (in >> text && absl::SimpleAtoi(text, &server.port) && server.port > 0) return server;
    if (!server.process->Running()) {
      return absl::InternalError(
          absl::StrCat(binary, " exited before serving:\n", server.process->Log()));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError(
      absl::StrCat(binary, " did not report a port in time:\n", server.process->Log()));
}

}  // namespace moe::testing
