#include "common/rpc/client_wait_limit.h"

#include <grpcpp/server_context.h>

#include <algorithm>
#include <iostream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace moe {
namespace {

// At most one log line per this long, counting the calls cancelled since the last one: a client
// that never reads may have hundreds of calls cancelled within a second.
constexpr std::chrono::seconds kLogEvery(10);

// Lives as long as its call; tells the limit when the call starts waiting on its client and when
// the call is gone.
class WaitInterceptor final : public grpc::experimental::Interceptor {
 public:
  WaitInterceptor(std::shared_ptr<ClientWaitLimit> limit, grpc::experimental::ServerRpcInfo* info,
                  ClientWaitLimit::Wait wait)
      : limit_(std::move(limit)), info_(info), wait_(wait) {}
  ~WaitInterceptor() override {
    if (waiting_) limit_->CallEnded(this);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    const InterceptionHookPoints starts_waiting =
        wait_ == ClientWaitLimit::Wait::kReply ? InterceptionHookPoints::PRE_SEND_STATUS
                                               : InterceptionHookPoints::POST_RECV_INITIAL_METADATA;
    if (!waiting_ && methods->QueryInterceptionHookPoint(starts_waiting)) {
      waiting_ = true;
      limit_->Waiting(this, info_->server_context()->c_call(), wait_);
    }
    methods->Proceed();
  }

 private:
  const std::shared_ptr<ClientWaitLimit> limit_;
  grpc::experimental::ServerRpcInfo* const info_;
  const ClientWaitLimit::Wait wait_;
  bool waiting_ = false;
};

class Factory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  Factory(std::shared_ptr<ClientWaitLimit> limit, absl::flat_hash_set<std::string> bounded_streams)
      : limit_(std::move(limit)), bounded_streams_(std::move(bounded_streams)) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    if (info->type() == grpc::experimental::ServerRpcInfo::Type::UNARY) {
      return new WaitInterceptor(limit_, info, ClientWaitLimit::Wait::kReply);
    }
    if (bounded_streams_.contains(info->method())) {
      return new WaitInterceptor(limit_, info, ClientWaitLimit::Wait::kStream);
    }
    return nullptr;
  }

 private:
  const std::shared_ptr<ClientWaitLimit> limit_;
  const absl::flat_hash_set<std::string> bounded_streams_;
};

}  // namespace

std::shared_ptr<ClientWaitLimit> ClientWaitLimit::Start(
    absl::Duration limit, std::string server_name, std::vector<std::string> bounded_streams,
    std::function<void(int64_t calls)> on_cancelled) {
  std::shared_ptr<ClientWaitLimit> self(new ClientWaitLimit(
      limit, std::move(server_name), std::move(bounded_streams), std::move(on_cancelled)));
  self->thread_ = std::thread([raw = self.get()] { raw->Run(); });
  return self;
}

ClientWaitLimit::ClientWaitLimit(absl::Duration limit, std::string server_name,
                                 std::vector<std::string> bounded_streams,
                                 std::function<void(int64_t calls)> on_cancelled)
    : limit_(limit),
      server_name_(std::move(server_name)),
      bounded_streams_(bounded_streams.begin(), bounded_streams.end()),
      on_cancelled_(std::move(on_cancelled)) {}

// Every interceptor holds a reference to this object, so no call is left waiting here.
ClientWaitLimit::~ClientWaitLimit() { Stop(); }

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
ClientWaitLimit::InterceptorFactory() {
  return std::make_unique<Factory>(shared_from_this(), bounded_streams_);
}

void ClientWaitLimit::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void ClientWaitLimit::Waiting(const void* key, grpc_call* call, Wait wait) {
  grpc_call_ref(call);
  const SteadyTime overdue_at =
      std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(limit_);
  absl::MutexLock lock(&mu_);
  waiting_[key] = Call{call, overdue_at, wait};
  if (overdue_at < wake_at_) wake_at_ = overdue_at;
}

void ClientWaitLimit::CallEnded(const void* key) {
  grpc_call* call = nullptr;
  {
    absl::MutexLock lock(&mu_);
    auto it = waiting_.find(key);
    if (it == waiting_.end()) return;
    call = it->second.call;
    waiting_.erase(it);
  }
  grpc_call_unref(call);
}

void ClientWaitLimit::Run() {
  const std::string flag = absl::StrCat(server_name_, " --unread_reply_timeout_s");
  const std::string unread = absl::StrCat(
      "the client did not take this call's reply within ", absl::FormatDuration(limit_),
      " of its being ready (", flag, "): cancelled to free the server thread that held it");
  const std::string open = absl::StrCat("this stream was open for ", absl::FormatDuration(limit_),
                                        ", the most a server thread waits on one (", flag,
                                        "): cancelled to free that thread");
  SteadyTime logged_at = std::chrono::steady_clock::now() - kLogEvery;
  int64_t unlogged = 0;
  for (bool stopping = false; !stopping;) {
    std::vector<Overdue> overdue;
    {
      absl::MutexLock lock(&mu_);
      Sleep(unlogged > 0 ? logged_at + kLogEvery : SteadyTime::max());
      stopping = stopping_;
      overdue = TakeOverdue();
    }
    // Cancelling ends the wait on the handler's thread, which then ends the call (CallEnded
    // takes mu_), or ends the call here for a callback-API call: so not under the lock.
    for (const Overdue& call : overdue) {
      grpc_call_cancel_with_status(call.call, GRPC_STATUS_DEADLINE_EXCEEDED,
                                   (call.wait == Wait::kReply ? unread : open).c_str(), nullptr);
      grpc_call_unref(call.call);
    }
    if (!overdue.empty() && on_cancelled_) on_cancelled_(static_cast<int64_t>(overdue.size()));
    unlogged += static_cast<int64_t>(overdue.size());
    const SteadyTime now = std::chrono::steady_clock::now();
    if (unlogged > 0 && (stopping || now - logged_at >= kLogEvery)) {
      std::cerr << server_name_ << ": cancelled " << unlogged << " call(s) that waited on their "
                << "client for " << absl::FormatDuration(limit_) << " (an unread reply or a "
                << "stream left open; --unread_reply_timeout_s)" << std::endl;
      logged_at = now;
      unlogged = 0;
    }
  }
}

void ClientWaitLimit::Sleep(SteadyTime log_due) {
  const SteadyTime planned = wake_at_;
  auto woken = [this, planned]()
                   ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || wake_at_ < planned; };
  const SteadyTime wake_at = std::min(planned, log_due);
  if (wake_at == SteadyTime::max()) {
    mu_.Await(absl::Condition(&woken));
  } else {
    mu_.AwaitWithTimeout(absl::Condition(&woken),
                         absl::FromChrono(wake_at - std::chrono::steady_clock::now()));
  }
}

std::vector<ClientWaitLimit::Overdue> ClientWaitLimit::TakeOverdue() {
  const SteadyTime now = std::chrono::steady_clock::now();
  std::vector<Overdue> overdue;
  wake_at_ = SteadyTime::max();
  for (auto& [key, call] : waiting_) {
    if (call.cancelled) continue;
    if (call.overdue_at <= now) {
      call.cancelled = true;
      grpc_call_ref(call.call);
      overdue.push_back(Overdue{call.call, call.wait});
    } else {
      wake_at_ = std::min(wake_at_, call.overdue_at);
    }
  }
  return overdue;
}

}  // namespace moe
