// TLS and mutual TLS between the real binaries, with certificates from scripts/make-certs: shards
// and a router that require client certificates signed by the test CA refuse clients without
// one or with one from another CA, answer the right client exactly as a plaintext cluster does,
// and a router trusting the wrong CA for its shards says the TLS handshake is why they are
// unavailable.
#include <grpcpp/grpcpp.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/casts.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/rpc/tls_credentials.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/cluster.h"
#include "testing/subprocess.h"
#include "testing/test_models.h"

namespace moe {
namespace {

using testing::Cluster;
using ::testing::HasSubstr;
using testing::MakeRequest;
using testing::MustStart;
using testing::Server;

constexpr int64_t kD = 256;  // the tiny preset

// A CA and its server and client certificates, made by scripts/make-certs.
struct Certs {
  std::string dir;
  std::string ca() const { return dir + "/ca.pem"; }
  std::string server_cert() const { return dir + "/server.pem"; }
  std::string server_key() const { return dir + "/server.key"; }
  std::string client_cert() const { return dir + "/client.pem"; }
  std::string client_key() const { return dir + "/client.key"; }
};

Certs MakeCerts(const std::string& ca_name) {
  Certs certs{testing::MakeTempDir("certs")};
  const std::string command = absl::StrCat(MOE_SOURCE_DIR, "/scripts/make-certs ", certs.dir,
                                           " --force '--cn=", ca_name, "' >/dev/null");
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
  return certs;
}

// Flags of a server that requires client certificates signed by `certs`' CA.
std::vector<std::string> MutualTlsServerFlags(const Certs& certs) {
  return {"--tls_cert=" + certs.server_cert(), "--tls_key=" + certs.server_key(),
          "--tls_ca=" + certs.ca()};
}

// A client trusting `server_ca`, presenting `client`'s certificate (none if null).
std::shared_ptr<grpc::Channel> Channel(const std::string& target, const Certs& server_ca,
                                       const Certs* client) {
  TlsFiles files;
  files.ca = server_ca.ca();
  if (client != nullptr) {
    files.cert = client->client_cert();
    files.key = client->client_key();
  }
  auto security = MakeChannelSecurity(files);
  EXPECT_TRUE(security.ok()) << security.status();
  grpc::ChannelArguments args;
  security->Apply(&args);
  return grpc::CreateCustomChannel(target, security->credentials, args);
}

grpc::Status Forward(const std::shared_ptr<grpc::Channel>& channel,
                     const v1::ForwardRequest& request, v1::ForwardResponse* response) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  return v1::Router::NewStub(channel)->Forward(&context, request, response);
}

grpc::Status ExpertInfo(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  v1::ExpertInfo info;
  return v1::Expert::NewStub(channel)->Info(&context, v1::ExpertInfoRequest(), &info);
}

class TlsEndToEndTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = new std::string(testing::WriteTestModel("tiny"));
    certs_ = new Certs(MakeCerts("moe test CA"));
    other_ = new Certs(MakeCerts("some other CA"));
    plaintext_ = new Cluster(*model_, 0, {"0-3", "4-7"});
    shards_ = new std::vector<Server>;
    std::string shards;
    for (const char* spec : {"0-3", "4-7"}) {
      std::vector<std::string> flags = MutualTlsServerFlags(*certs_);
      flags.insert(flags.end(),
                   {"--model=" + *model_, "--layer=0", std::string("--experts=") + spec});
      shards_->push_back(MustStart(testing::ExpertBinary(), flags));
      absl::StrAppend(&shards, shards.empty() ? "" : ",", spec, "@", shards_->back().target());
    }
    shard_spec_ = new std::string(shards);
    router_ = new Server(StartRouter(*certs_, *certs_));
  }
  static void TearDownTestSuite() {
    delete router_;
    delete shards_;
    delete plaintext_;
  }

  // A router serving mutual TLS with `certs_`, calling the shards trusting `shard_ca`'s CA and
  // presenting `client`'s certificate, plus `extra` flags.
  static Server StartRouter(const Certs& shard_ca, const Certs& client,
                            const std::vector<std::string>& extra = {}) {
    std::vector<std::string> flags = MutualTlsServerFlags(*certs_);
    flags.insert(flags.end(),
                 {"--model=" + *model_, "--layer=0", "--shards=" + *shard_spec_,
                  "--shard_tls_ca=" + shard_ca.ca(), "--shard_tls_cert=" + client.client_cert(),
                  "--shard_tls_key=" + client.client_key()});
    flags.insert(flags.end(), extra.begin(), extra.end());
    return MustStart(testing::RouterBinary(), flags);
  }

  static v1::ForwardRequest Request() {
    return MakeRequest(testing::RandomTokens(16, kD, 5), 16, kD);
  }

  static std::string* model_;
  static Certs* certs_;
  static Certs* other_;
  static Cluster* plaintext_;
  static std::vector<Server>* shards_;
  static std::string* shard_spec_;
  static Server* router_;
};

std::string* TlsEndToEndTest::model_ = nullptr;
Certs* TlsEndToEndTest::certs_ = nullptr;
Certs* TlsEndToEndTest::other_ = nullptr;
Cluster* TlsEndToEndTest::plaintext_ = nullptr;
std::vector<Server>* TlsEndToEndTest::shards_ = nullptr;
std::string* TlsEndToEndTest::shard_spec_ = nullptr;
Server* TlsEndToEndTest::router_ = nullptr;

TEST_F(TlsEndToEndTest, MutualTlsAnswersBitwiseAsPlaintext) {
  v1::ForwardResponse expected, actual;
  ASSERT_TRUE(plaintext_->Forward(Request(), &expected).ok());
  grpc::Status status = Forward(Channel(router_->target(), *certs_, certs_), Request(), &actual);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(actual.output().values_size(), expected.output().values_size());
  for (int i = 0; i < actual.output().values_size(); ++i) {
    // Bitwise: TLS must change nothing but the wire.
    ASSERT_EQ(absl::bit_cast<uint32_t>(actual.output().values(i)),
              absl::bit_cast<uint32_t>(expected.output().values(i)))
        << "value " << i;
  }
  ASSERT_EQ(actual.routing_size(), expected.routing_size());
  for (int t = 0; t < actual.routing_size(); ++t) {
    EXPECT_THAT(actual.routing(t).experts(),
                ::testing::ElementsAreArray(expected.routing(t).experts()));
  }
}

TEST_F(TlsEndToEndTest, RouterRefusesClientWithoutCertificate) {
  v1::ForwardResponse response;
  grpc::Status status = Forward(Channel(router_->target(), *certs_, nullptr), Request(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_EQ(response.output().values_size(), 0);
}

TEST_F(TlsEndToEndTest, RouterRefusesCertificateFromAnotherCa) {
  v1::ForwardResponse response;
  grpc::Status status = Forward(Channel(router_->target(), *certs_, other_), Request(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
}

TEST_F(TlsEndToEndTest, RouterRefusesPlaintextClient) {
  v1::ForwardResponse response;
  grpc::Status status =
      Forward(grpc::CreateChannel(router_->target(), grpc::InsecureChannelCredentials()), Request(),
              &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
}

TEST_F(TlsEndToEndTest, ClientRefusesServerFromAnotherCa) {
  v1::ForwardResponse response;
  // The client trusts only the other CA, so the router's certificate does not verify.
  grpc::Status status = Forward(Channel(router_->target(), *other_, certs_), Request(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr("certificate verify failed"));
}

TEST_F(TlsEndToEndTest, ShardsRefuseAllButTheRightCertificate) {
  for (Server& shard : *shards_) {
    EXPECT_EQ(ExpertInfo(Channel(shard.target(), *certs_, nullptr)).error_code(),
              grpc::StatusCode::UNAVAILABLE);
    EXPECT_EQ(ExpertInfo(Channel(shard.target(), *certs_, other_)).error_code(),
              grpc::StatusCode::UNAVAILABLE);
    EXPECT_EQ(ExpertInfo(grpc::CreateChannel(shard.target(), grpc::InsecureChannelCredentials()))
                  .error_code(),
              grpc::StatusCode::UNAVAILABLE);
    grpc::Status ok = ExpertInfo(Channel(shard.target(), *certs_, certs_));
    EXPECT_TRUE(ok.ok()) << ok.error_message();
  }
}

TEST_F(TlsEndToEndTest, RouterTrustingWrongCaForShardsNamesTls) {
  Server router = StartRouter(*other_, *certs_);
  auto channel = Channel(router.target(), *certs_, certs_);
  v1::ForwardResponse response;
  grpc::Status status = Forward(channel, Request(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr("TLS handshake failed"));
  EXPECT_THAT(status.error_message(), HasSubstr("not signed by the CA --shard_tls_ca names"));

  // Info says so too, per shard, without revealing addresses.
  // The router describes its shards in the background: poll (bounded) until both have failed.
  v1::ModelInfo info;
  auto both_failed = [&info] {
    int failed = 0;
    for (const v1::ShardInfo& shard : info.shards()) {
      if (shard.problem().find("TLS") != std::string::npos) ++failed;
    }
    return failed == 2;
  };
  for (int i = 0; i < 100 && (i == 0 || !both_failed()); ++i) {
    if (i > 0) absl::SleepFor(absl::Milliseconds(100));
    grpc::ClientContext context;
    info.Clear();
    ASSERT_TRUE(v1::Router::NewStub(channel)->Info(&context, v1::InfoRequest(), &info).ok());
  }
  ASSERT_EQ(info.shards_size(), 2);
  for (const v1::ShardInfo& shard : info.shards()) {
    EXPECT_EQ(shard.targets_size(), 0);
    EXPECT_NE(shard.status(), "SERVING");
    EXPECT_THAT(shard.problem(), HasSubstr("TLS handshake failed"));
    EXPECT_THAT(shard.problem(), ::testing::Not(HasSubstr("127.0.0.1")));
  }
}

TEST_F(TlsEndToEndTest, RouterRejectedByShardsNamesTls) {
  // The shards require a certificate of their CA; this router presents the other CA's.
  Server router = StartRouter(*certs_, *other_);
  v1::ForwardResponse response;
  grpc::Status status = Forward(Channel(router.target(), *certs_, certs_), Request(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr("TLS handshake failed"));
  EXPECT_THAT(status.error_message(), HasSubstr("--shard_tls_cert"));
}

TEST_F(TlsEndToEndTest, ShardServerNameOverride) {
  // The certificates name expert-0 (a compose service name): dialling 127.0.0.1 while expecting
  // that name works; expecting a name the certificate lacks fails, naming the flag.
  Server good = StartRouter(*certs_, *certs_, {"--shard_tls_server_name=expert-0"});
  v1::ForwardResponse response;
  grpc::Status status = Forward(Channel(good.target(), *certs_, certs_), Request(), &response);
  EXPECT_TRUE(status.ok()) << status.error_message();

  Server bad = StartRouter(*certs_, *certs_, {"--shard_tls_server_name=elsewhere.example"});
  status = Forward(Channel(bad.target(), *certs_, certs_), Request(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr("--shard_tls_server_name"));
}

TEST_F(TlsEndToEndTest, ToolsSpeakMutualTls) {
  const std::vector<std::string> tls = {"--tls_ca=" + certs_->ca(),
                                        "--tls_cert=" + certs_->client_cert(),
                                        "--tls_key=" + certs_->client_key()};
  std::string log;
  std::vector<std::string> client = {"--router=" + router_->target(), "--tokens=2"};
  client.insert(client.end(), tls.begin(), tls.end());
  EXPECT_EQ(testing::RunTool("tools/moe_client", client, &log), 0) << log;
  EXPECT_THAT(log, ::testing::ContainsRegex("router stats: [1-9][0-9]* requests?, "));
  std::vector<std::string> expert_info = {"--expert=" + shards_->front().target()};
  expert_info.insert(expert_info.end(), tls.begin(), tls.end());
  EXPECT_EQ(testing::RunTool("tools/moe_client", expert_info, &log), 0) << log;
  EXPECT_THAT(log, HasSubstr("compute calls"));
  EXPECT_THAT(log, ::testing::ContainsRegex("kernels: [^(]"));  // the shard reports its kernels
  std::vector<std::string> health = {"--target=" + shards_->front().target()};
  health.insert(health.end(), tls.begin(), tls.end());
  EXPECT_EQ(testing::RunTool("tools/moe_health", health, &log), 0) << log;
  EXPECT_THAT(log, HasSubstr("SERVING"));
  std::vector<std::string> bench = {"--mode=remote", "--router=" + router_->target(), "--tokens=2",
                                    "--requests=2"};
  bench.insert(bench.end(), tls.begin(), tls.end());
  EXPECT_EQ(testing::RunTool("tools/moe_layer_bench", bench, &log), 0) << log;
  EXPECT_THAT(log, HasSubstr("\"tokens_per_s\""));
  // moe_layer_bench without a certificate: refused, naming TLS as the likely cause.
  EXPECT_EQ(testing::RunTool("tools/moe_layer_bench",
                             {"--mode=remote", "--router=" + router_->target(),
                              "--tls_ca=" + certs_->ca(), "--requests=1"},
                             &log),
            1);
  EXPECT_THAT(log, HasSubstr("TLS handshake failed"));

  // Without a certificate: refused, and the tool says TLS is the likely cause.
  EXPECT_EQ(testing::RunTool("tools/moe_health",
                             {"--target=" + shards_->front().target(), "--tls_ca=" + certs_->ca(),
                              "--timeout_ms=5000"},
                             &log),
            1);
  EXPECT_THAT(log, HasSubstr("TLS handshake failed"));
}

}  // namespace
}  // namespace moe
