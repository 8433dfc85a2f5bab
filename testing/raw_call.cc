#include "testing/raw_call.h"

#include <grpcpp/generic/generic_stub.h>

#include <utility>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

namespace moe::testing {

grpc::Status SendRawBytes(grpc::Channel* channel, const std::string& method,
                          const std::string& bytes) {
  grpc::GenericStub stub(channel->shared_from_this());
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1), response;
  absl::Notification done;
  grpc::Status result;
  stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                 [&](grpc::Status status) {
                   result = std::move(status);
                   done.Notify();
                 });
  done.WaitForNotification();
  return result;
}

}  // namespace moe::testing
