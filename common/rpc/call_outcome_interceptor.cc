#include "common/rpc/call_outcome_interceptor.h"

#include <utility>

#include "absl/time/clock.h"

namespace moe {
namespace {

using grpc::experimental::InterceptionHookPoints;

class CallOutcomeInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit CallOutcomeInterceptor(const CallObserver* observer)
      : observer_(observer), started_(absl::Now()) {
    if (observer_->started) observer_->started();
  }
  ~CallOutcomeInterceptor() override {
    if (!finished_) Finish(absl::StatusCode::kCancelled);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS) &&
        !finished_) {
      Finish(static_cast<absl::StatusCode>(methods->GetSendStatus().error_code()));
    }
    methods->Proceed();
  }

 private:
  void Finish(absl::StatusCode code) {
    finished_ = true;
    if (observer_->finished) observer_->finished(code, absl::Now() - started_);
  }

  const CallObserver* const observer_;
  const absl::Time started_;
  bool finished_ = false;
};

class Factory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit Factory(CallObservers observers) : observers_(std::move(observers)) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    if (info->method() == nullptr) return nullptr;
    auto it = observers_.find(info->method());
    return it == observers_.end() ? nullptr : new CallOutcomeInterceptor(&it->second);
  }

 private:
  const CallObservers observers_;
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeCallOutcomeInterceptorFactory(CallObservers observers) {
  return std::make_unique<Factory>(std::move(observers));
}

}  // namespace moe
