#include "testing/load_loop.h"

#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace moe::testing {
namespace {

const char* CodeName(grpc::StatusCode code) {
  // Four codes a line, in code order.
  // clang-format off
  static const char* const kNames[] = {
      "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
      "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
      "UNAUTHENTICATED"};
  // clang-format on
  const int i = static_cast<int>(code);
  return i >= 0 && i <= 16 ? kNames[i] : "?";
}

int64_t StatusField(int pid, absl::string_view field) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view rest = line;
    if (!absl::ConsumePrefix(&rest, field)) continue;
    rest = absl::StripAsciiWhitespace(rest);
    rest = absl::StripSuffix(rest, " kB");
    int64_t value = 0;
    return absl::SimpleAtoi(rest, &value) ? value : -1;
  }
  return -1;
}

}  // namespace

LoadLoop::LoadLoop(const std::string& router_target, const v1::ForwardRequest& request, int threads,
                   absl::Duration deadline)
    : channel_(grpc::CreateChannel(router_target, grpc::InsecureChannelCredentials())),
      request_(request),
      deadline_(deadline) {
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Run(); });
}

void LoadLoop::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  for (std::thread& thread : threads_) thread.join();
  threads_.clear();
}

void LoadLoop::Run() {
  std::unique_ptr<v1::Router::Stub> stub = v1::Router::NewStub(channel_);
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stop_) return;
    }
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + deadline_));
    v1::ForwardResponse response;
    const grpc::Status status = stub->Forward(&context, request_, &response);
    absl::MutexLock lock(&mu_);
    calls_.push_back({absl::Now(), status.error_code(), status.error_message()});
  }
}

double LoadLoop::OkRate(absl::Time from, absl::Time to) const {
  absl::MutexLock lock(&mu_);
  int64_t ok = 0;
  for (const Call& call : calls_) ok += call.code == grpc::OK && call.end >= from && call.end < to;
  return ok / absl::ToDoubleSeconds(to - from);
}

std::vector<LoadLoop::Call> LoadLoop::Failures(absl::Time from, absl::Time to) const {
  absl::MutexLock lock(&mu_);
  std::vector<Call> failures;
  for (const Call& call : calls_) {
    if (call.code != grpc::OK && call.end >= from && call.end < to) failures.push_back(call);
  }
  return failures;
}

int64_t LoadLoop::Calls() const {
  absl::MutexLock lock(&mu_);
  return calls_.size();
}

std::string LoadLoop::Summary() const {
  absl::MutexLock lock(&mu_);
  std::map<grpc::StatusCode, std::pair<int64_t, std::string>> by_code;
  for (const Call& call : calls_) {
    auto& [count, message] = by_code[call.code];
    if (count++ == 0) message = call.message;
  }
  std::string out;
  for (const auto& [code, entry] : by_code) {
    absl::StrAppend(&out, out.empty() ? "" : ", ", CodeName(code), ": ", entry.first);
    if (code != grpc::OK) absl::StrAppend(&out, " (\"", entry.second, "\")");
  }
  return out;
}

int ThreadCount(int pid) { return static_cast<int>(StatusField(pid, "Threads:")); }
int64_t PeakRssKib(int pid) { return StatusField(pid, "VmHWM:"); }

}  // namespace moe::testing
