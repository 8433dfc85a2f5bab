#include "common/rpc/live_calls.h"

#include <utility>

namespace moe {
namespace {

// Lives as long as its call: created when the server matches the call, destroyed with it.
class CountingInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit CountingInterceptor(std::shared_ptr<LiveCalls> calls) : calls_(std::move(calls)) {
    calls_->Started();
  }
  ~CountingInterceptor() override { calls_->Ended(); }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    methods->Proceed();
  }

 private:
  const std::shared_ptr<LiveCalls> calls_;
};

class Factory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit Factory(std::shared_ptr<LiveCalls> calls) : calls_(std::move(calls)) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo*) override {
    return new CountingInterceptor(calls_);
  }

 private:
  const std::shared_ptr<LiveCalls> calls_;
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
LiveCalls::InterceptorFactory() {
  return std::make_unique<Factory>(shared_from_this());
}

bool LiveCalls::AwaitNone(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto none = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return live_ == 0; };
  return mu_.AwaitWithDeadline(absl::Condition(&none), deadline);
}

void LiveCalls::Started() {
  absl::MutexLock lock(&mu_);
  ++live_;
}

void LiveCalls::Ended() {
  absl::MutexLock lock(&mu_);
  --live_;
}

}  // namespace moe
