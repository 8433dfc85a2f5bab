// One unary call of `method` ("/moe.v1.Router/Forward") whose request is `bytes` as they are, not
// a serialized message: for tests of what a server does with bytes its method cannot parse.
// Waits for the answer (deadline 10 s) and returns its status.
#ifndef MOE_TESTING_RAW_CALL_H_
#define MOE_TESTING_RAW_CALL_H_

#include <grpcpp/grpcpp.h>

#include <string>

namespace moe::testing {

grpc::Status SendRawBytes(grpc::Channel* channel, const std::string& method,
                          const std::string& bytes);

}  // namespace moe::testing

#endif  // MOE_TESTING_RAW_CALL_H_
