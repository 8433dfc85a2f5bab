#include "common/rpc/server_runner.h"

#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/cli/port_file.h"
#include "common/rpc/channel_arguments.h"
#include "common/rpc/listen_port.h"
#include "common/rpc/parse_error_interceptor.h"
#include "common/rpc/reflection_service.h"
#include "grpc/health/v1/health.pb.h"

namespace moe {
namespace {

constexpr absl::Duration kIdleCloseRetry = absl::Milliseconds(100);

}  // namespace

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(
    const ServeOptions& options, const std::vector<grpc::Service*>& services) {
  grpc::EnableDefaultHealthCheckService(true);
  // Reflection describes registered services from protobuf's generated pool, and gRPC's built-in
  // health service brings none (it is not protobuf-generated). Touching our generated health.pb.cc
  // links it in and registers grpc.health.v1, so reflection clients (grpcurl) can describe it.
  grpc::health::v1::HealthCheckRequest::descriptor();

  if (!PortInRange(options.listen)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot listen on ", options.listen,
                     ": expected HOST:PORT with a port from 0 to 65535 (0: any free port)"));
  }
  grpc::ServerBuilder builder;
  AddReflection(&builder);
  int port = 0;
  builder.AddListeningPort(
      options.listen,
      options.credentials != nullptr ? options.credentials : grpc::InsecureServerCredentials(),
      &port);
  // gRPC sets SO_REUSEPORT by default: a second server on a taken port would start and share it.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  // gRPC 1.51 inflates a compressed message whole before it compares its size with the limit
  // (the 64 MiB a 64 kB gzip request of zeros inflates to are allocated, then refused), so a
  // small request could make the server allocate without bound. Float tensors barely compress
  // anyway: accept identity only; a compressed request is refused (UNIMPLEMENTED, "Compression
  // algorithm 'gzip' is disabled") from its headers, before its message is read.
  builder.AddChannelArgument(GRPC_COMPRESSION_CHANNEL_ENABLED_ALGORITHMS_BITSET,
                             1 << GRPC_COMPRESS_NONE);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  if (options.max_connection_age > absl::ZeroDuration()) {
    builder.AddChannelArgument(
        GRPC_ARG_MAX_CONNECTION_AGE_MS,
        static_cast<int>(
            std::min<int64_t>(absl::ToInt64Milliseconds(options.max_connection_age), INT32_MAX)));
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, 10000);
  }
  AddServerKeepaliveArguments(builder);
  AddServerBulkTransferArguments(builder);
  // gRPC's sync server ends a thread whose call finished once two others poll (MAX_POLLERS 2),
  // and starts one for the next call that finds no poller free: under concurrent calls each call
  // paid for creating and ending a thread (measured: half the router's CPU at 32 concurrent
  // clients, README "Batching at the router"). Threads that finished a call poll for the next one
  // instead; how many exist stays bounded by max_threads.
  builder.SetSyncServerOption(
      grpc::ServerBuilder::SyncServerOption::MAX_POLLERS,
      options.max_threads > 0 ? options.max_threads : kIdleThreadsUnbounded);
  if (options.max_threads > 0) {
    grpc::ResourceQuota quota(absl::StrCat(options.name, "_threads"));
    quota.SetMaxThreads(options.max_threads);
    builder.SetResourceQuota(quota);
  }
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(MakeParseErrorInterceptorFactory());
  // After the parse-error interceptor: statuses are sent through the interceptors in order, so
  // this one sees the status the client gets.
  interceptors.push_back(MakeCallOutcomeInterceptorFactory(options.call_observers));
  auto live_calls = std::make_shared<LiveCalls>();
  interceptors.push_back(live_calls->InterceptorFactory());
  std::shared_ptr<ClientWaitLimit> client_wait_limit;
  if (options.unread_reply_timeout > absl::ZeroDuration()) {
    client_wait_limit = ClientWaitLimit::Start(options.unread_reply_timeout, options.name,
                                               {kReflectionMethod}, options.client_wait_cancelled);
    interceptors.push_back(client_wait_limit->InterceptorFactory());
  }
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  for (grpc::Service* service : services) builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen, ": ", WhyCannotListen(options.listen)));
  }
  auto self = std::unique_ptr<GrpcServer>(new GrpcServer(
      options, std::move(server), port, std::move(live_calls), std::move(client_wait_limit)));
  for (const std::string& name : options.health_services) {
    self->SetServing(name, options.serving_at_start);
  }
  self->SetServing("", options.serving_at_start);
  std::cerr << options.name << ": serving on port " << port << " (" << options.listen << ")"
            << std::endl;
  if (options.credentials == nullptr && !OnlyThisHostCanReach(options.listen)) {
    std::cerr << options.name << ": warning: plaintext on " << options.listen
              << ", which other machines may reach: anyone who can connect may call it and read "
                 "its traffic. Serve mutual TLS (--tls_cert, --tls_key, --tls_ca) unless only "
                 "trusted peers share this network."
              << std::endl;
  }
  // Last: whoever waits for the port file finds the lines above in the log.
  if (!options.port_file.empty()) {
    absl::Status written = WritePortFile(options.port_file, port);
    if (!written.ok()) {
      self->Drain(absl::ZeroDuration()).IgnoreError();
      return written;
    }
  }
  return self;
}

GrpcServer::GrpcServer(ServeOptions options, std::unique_ptr<grpc::Server> server, int port,
                       std::shared_ptr<LiveCalls> live_calls,
                       std::shared_ptr<ClientWaitLimit> client_wait_limit)
    : options_(std::move(options)),
      port_(port),
      server_(std::move(server)),
      health_(server_->GetHealthCheckService()),
      live_calls_(std::move(live_calls)),
      client_wait_limit_(std::move(client_wait_limit)) {}

GrpcServer::~GrpcServer() { Drain(absl::ZeroDuration()).IgnoreError(); }

void GrpcServer::SetServing(const std::string& service_name, bool serving) {
  if (health_ != nullptr && !health_frozen_.load()) {
    health_->SetServingStatus(service_name, serving);
  }
}

absl::Status GrpcServer::Drain(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  if (draining_) return drain_result_;
  draining_ = true;
  health_frozen_.store(true);
  // NOT_SERVING for every name, and no later SetServing() can undo it.
  if (health_ != nullptr) health_->Shutdown();
  const absl::Time deadline = absl::Now() + timeout;
  // Server::Shutdown stops new calls, cancels what still runs at the deadline, then waits for
  // every handler to return, however long that takes; so it runs on a thread of its own, which
  // is given up on kDrainAbandonGrace after the deadline. An abandoned server is deleted by that
  // thread if its handlers ever return.
  struct Stopper {
    absl::Mutex mu;
    bool stopped ABSL_GUARDED_BY(mu) = false;
    std::unique_ptr<grpc::Server> orphan ABSL_GUARDED_BY(mu);
  };
  auto stopper = std::make_shared<Stopper>();
  grpc::Server* server = server_.get();
  std::thread thread([server, deadline, stopper] {
    server->Shutdown(absl::ToChronoTime(deadline));
    server->Wait();
    absl::MutexLock stopper_lock(&stopper->mu);
    stopper->stopped = true;
    stopper->orphan.reset();
  });
  // Shutdown also waits for every client connection to close. Once no call is left, they are
  // closed (grpc_server_cancel_all_calls disconnects every connection; it cancels nothing then),
  // and again each kIdleCloseRetry while the stop is not done: a connection a client opened
  // before the listener closed. (At the deadline Shutdown cancels and disconnects by itself.)
  while (absl::Now() < deadline && live_calls_->AwaitNone(deadline)) {
    grpc_server_cancel_all_calls(server->c_server());
    absl::MutexLock stopper_lock(&stopper->mu);
    if (stopper->mu.AwaitWithTimeout(absl::Condition(&stopper->stopped), kIdleCloseRetry)) break;
  }
  absl::MutexLock stopper_lock(&stopper->mu);
  const bool stopped = stopper->mu.AwaitWithDeadline(absl::Condition(&stopper->stopped),
                                                     deadline + kDrainAbandonGrace);
  if (client_wait_limit_ != nullptr) client_wait_limit_->Stop();
  if (stopped) {
    drain_result_ = absl::OkStatus();
    thread.join();  // it released the mutex and has nothing left to do but return
    return drain_result_;
  }
  stopper->orphan = std::move(server_);
  thread.detach();
  drain_result_ = absl::DeadlineExceededError(
      absl::StrCat("calls still running ", absl::FormatDuration(kDrainAbandonGrace),
                   " after the drain deadline (", absl::FormatDuration(timeout),
                   ") although cancelled; abandoning them"));
  return drain_result_;
}

}  // namespace moe
