// moe_health: exits 0 when a server reports SERVING on grpc.health.v1, 1 otherwise; with --live,
// 0 when it answers at all. Made for exec-form container healthchecks and readiness and liveness
// probes (the images have no shell).
//
//   moe_health --target=127.0.0.1:50051 [--service=NAME] [--timeout_ms=1000] [--live]
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "common/cli/parse_flags.h"
#include "common/rpc/tls_credentials.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tools/client_tls_flags.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "Server to check");
ABSL_FLAG(std::string, service, "", "Service name to check; empty means the whole server");
ABSL_FLAG(int, timeout_ms, 1000, "Give up after this long");
ABSL_FLAG(bool, live, false,
          "Exit 0 when the server answers, SERVING or not: for liveness checks, which should "
          "restart a process that does not answer, not a router saying its shards are down");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Checks a gRPC server's health (grpc.health.v1); exits 0 when SERVING (with --live: when it\n"
      "answers at all), 1 otherwise.\n"
      "  moe_health [--target=HOST:PORT] [--service=NAME] [--timeout_ms=MS] [--live]\n"
      "             [--tls_ca=PEM [--tls_cert=PEM --tls_key=PEM] [--tls_server_name=NAME]]");
  moe::ParseFlags(argc, argv);
  auto security = moe::MakeChannelSecurity(moe::ClientTlsFlags());
  if (!security.ok()) {
    std::cerr << "moe_health: " << security.status().message() << std::endl;
    return 2;
  }
  grpc::ChannelArguments args;
  security->Apply(&args);
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateCustomChannel(absl::GetFlag(FLAGS_target), security->credentials, args));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(absl::GetFlag(FLAGS_timeout_ms)));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(absl::GetFlag(FLAGS_service));
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) {
    std::cerr << "moe_health: " << absl::GetFlag(FLAGS_target) << ": "
              << moe::DescribeCallFailure(status) << std::endl;
    return 1;
  }
  const bool serving = response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  std::cout << absl::GetFlag(FLAGS_target) << ": "
            << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status())
            << std::endl;
  return serving || absl::GetFlag(FLAGS_live) ? 0 : 1;
}
