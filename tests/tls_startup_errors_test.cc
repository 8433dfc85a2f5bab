// Bad TLS flags stop every binary at start-up with a message naming the flag and the file:
// a missing or unreadable file, a file that is not PEM or whose blocks do not parse, a key that is
// not the certificate's, a certificate without its key (or the reverse), and a server CA without
// the server's own certificate.
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/cluster.h"
#include "testing/test_models.h"

namespace moe {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

class TlsStartupErrorsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = new std::string(testing::WriteTestModel("tiny"));
    certs_ = new std::string(testing::MakeTempDir("certs"));
    const std::string command =
        absl::StrCat(MOE_SOURCE_DIR, "/scripts/make-certs ", *certs_, " --force >/dev/null");
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
  }

  // Starting `binary` (a server) with `tls` flags must fail, its log containing `expected`.
  static void ExpectServerFails(const std::string& binary, const std::vector<std::string>& tls,
                                const ::testing::Matcher<std::string>& expected) {
    std::vector<std::string> args = {"--model=" + *model_, "--layer=0"};
    args.push_back(binary == testing::RouterBinary() ? "--shards=all@127.0.0.1:1"
                                                     : "--experts=all");
    args.insert(args.end(), tls.begin(), tls.end());
    auto server = testing::StartServer(binary, args);
    ASSERT_FALSE(server.ok()) << binary << " started although it should not";
    EXPECT_THAT(std::string(server.status().message()), expected);
  }

  static std::string Cert(const std::string& name) { return *certs_ + "/" + name; }

  static std::string* model_;
  static std::string* certs_;
};

std::string* TlsStartupErrorsTest::model_ = nullptr;
std::string* TlsStartupErrorsTest::certs_ = nullptr;

TEST_F(TlsStartupErrorsTest, MissingCertificateFileIsNamed) {
  for (const std::string& binary : {testing::ExpertBinary(), testing::RouterBinary()}) {
    ExpectServerFails(
        binary, {"--tls_cert=/nonexistent/server.pem", "--tls_key=" + Cert("server.key")},
        AllOf(HasSubstr("--tls_cert=/nonexistent/server.pem"), HasSubstr("No such file")));
  }
}

TEST_F(TlsStartupErrorsTest, UnreadableOrNonPemFileIsNamed) {
  ExpectServerFails(testing::ExpertBinary(),
                    {"--tls_cert=" + Cert("server.pem"), "--tls_key=" + *certs_},
                    HasSubstr(absl::StrCat("--tls_key=", *certs_, ": is a directory")));
  ExpectServerFails(testing::RouterBinary(),
                    {"--tls_cert=" + Cert("server.pem"), "--tls_key=" + Cert("server.pem")},
                    HasSubstr("no PEM \"-----BEGIN PRIVATE KEY-----\" block"));
  ExpectServerFails(testing::ExpertBinary(),
                    {"--tls_cert=" + Cert("server.key"), "--tls_key=" + Cert("server.key")},
                    HasSubstr("--tls_cert=" + Cert("server.key") + ": no PEM"));
}

TEST_F(TlsStartupErrorsTest, CertificateWithoutKeyAndTheReverse) {
  ExpectServerFails(testing::ExpertBinary(), {"--tls_cert=" + Cert("server.pem")},
                    HasSubstr("--tls_cert is set but --tls_key is not"));
  ExpectServerFails(testing::RouterBinary(), {"--tls_key=" + Cert("server.key")},
                    HasSubstr("--tls_key is set but --tls_cert is not"));
  ExpectServerFails(testing::RouterBinary(),
                    {"--shard_tls_ca=" + Cert("ca.pem"), "--shard_tls_key=" + Cert("client.key")},
                    HasSubstr("--shard_tls_key is set but --shard_tls_cert is not"));
}

TEST_F(TlsStartupErrorsTest, ServerCaWithoutServerCertificate) {
  ExpectServerFails(testing::ExpertBinary(), {"--tls_ca=" + Cert("ca.pem")},
                    HasSubstr("--tls_ca needs --tls_cert and --tls_key"));
}

// gRPC alone reported these only at the first handshake, naming neither flag nor file: a server
// "cannot listen on 127.0.0.1:0: address in use", a router's shard "UNREACHABLE: empty address
// list".
TEST_F(TlsStartupErrorsTest, AKeyThatIsNotTheCertificatesIsNamed) {
  for (const std::string& binary : {testing::ExpertBinary(), testing::RouterBinary()}) {
    ExpectServerFails(binary,
                      {"--tls_cert=" + Cert("server.pem"), "--tls_key=" + Cert("client.key")},
                      HasSubstr(absl::StrCat("--tls_key=", Cert("client.key"),
                                             " is not the private key of the certificate in "
                                             "--tls_cert=",
                                             Cert("server.pem"))));
  }
  ExpectServerFails(testing::RouterBinary(),
                    {"--shard_tls_ca=" + Cert("ca.pem"), "--shard_tls_cert=" + Cert("client.pem"),
                     "--shard_tls_key=" + Cert("server.key")},
                    HasSubstr("--shard_tls_key=" + Cert("server.key") + " is not the private key"));
}

TEST_F(TlsStartupErrorsTest, APemBlockThatDoesNotParseIsNamed) {
  const std::string garbage = testing::MakeTempDir("garbage-pem") + "/garbage.pem";
  std::ofstream(garbage) << "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n"
                            "-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\n"
                            "bm90IGEga2V5\n-----END PRIVATE KEY-----\n";
  ExpectServerFails(testing::ExpertBinary(),
                    {"--tls_cert=" + Cert("server.pem"), "--tls_key=" + Cert("server.key"),
                     "--tls_ca=" + garbage},
                    HasSubstr("--tls_ca=" + garbage + ": a CERTIFICATE block does not parse"));
  ExpectServerFails(testing::ExpertBinary(), {"--tls_cert=" + garbage, "--tls_key=" + garbage},
                    HasSubstr("--tls_cert=" + garbage + ": a CERTIFICATE block does not parse"));
  ExpectServerFails(testing::RouterBinary(),
                    {"--tls_cert=" + Cert("server.pem"), "--tls_key=" + garbage},
                    HasSubstr("--tls_key=" + garbage + ": the PRIVATE KEY block does not parse"));
}

TEST_F(TlsStartupErrorsTest, MissingShardCaIsNamed) {
  ExpectServerFails(testing::RouterBinary(), {"--shard_tls_ca=/nonexistent/ca.pem"},
                    HasSubstr("--shard_tls_ca=/nonexistent/ca.pem: cannot read the file"));
}

}  // namespace
}  // namespace moe
