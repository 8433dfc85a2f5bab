#include "common/rpc/tls_credentials.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace moe {
namespace {

// A PEM file is small; anything larger is not one (and is not read into memory whole).
constexpr std::streamsize kMaxPemBytes = 1 << 20;

bool HasPemBlock(absl::string_view text, absl::string_view kind) {
  constexpr absl::string_view kBegin = "-----BEGIN ";
  for (size_t at = text.find(kBegin); at != absl::string_view::npos;
       at = text.find(kBegin, at + 1)) {
    const size_t label = at + kBegin.size();
    const size_t end = text.find("-----", label);
    if (end == absl::string_view::npos) return false;
    if (absl::EndsWith(text.substr(label, end - label), kind)) return true;
  }
  return false;
}

// Both or neither of cert and key.
absl::Status CheckPair(const TlsFiles& files) {
  if (files.cert.empty() != files.key.empty()) {
    const bool has_cert = !files.cert.empty();
    return absl::InvalidArgumentError(absl::StrCat(
        files.flag_prefix, has_cert ? "cert" : "key", " is set but ", files.flag_prefix,
        has_cert ? "key" : "cert", " is not: give both (the certificate and its private key)"));
  }
  return absl::OkStatus();
}

struct Pems {
  std::string cert, key, ca;
};

// OpenSSL objects, freed by their own functions.
struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* cert) const { X509_free(cert); }
};
struct KeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using Bio = std::unique_ptr<BIO, BioFree>;
using Certificate = std::unique_ptr<X509, X509Free>;

Bio ReadOnlyBio(const std::string& pem) {
  return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// The certificates of a PEM text, in order; none when a CERTIFICATE block does not parse.
std::vector<Certificate> ParseCertificates(const std::string& pem) {
  std::vector<Certificate> certificates;
  Bio bio = ReadOnlyBio(pem);
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    certificates.emplace_back(cert);
  }
  // Reading stops at the end of the text (PEM_R_NO_START_LINE) or at a block it cannot parse.
  const unsigned long error = ERR_peek_last_error();
  ERR_clear_error();
  if (ERR_GET_REASON(error) != PEM_R_NO_START_LINE) certificates.clear();
  return certificates;
}

// What gRPC's TLS would find wrong with the files only when the first handshake fails, and then
// in words that name neither (a server: "cannot listen"; a client: "empty address list"): a
// certificate or key that does not parse, and a key that is not the certificate's.
absl::Status CheckPems(const Pems& pems, const TlsFiles& files) {
  const std::string& prefix = files.flag_prefix;
  if (!pems.cert.empty()) {
    std::vector<Certificate> chain = ParseCertificates(pems.cert);
    if (chain.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          prefix, "cert=", files.cert, ": a CERTIFICATE block does not parse as X.509"));
    }
    Bio bio = ReadOnlyBio(pems.key);
    // No password: OpenSSL's default would prompt on the terminal for an encrypted key.
    pem_password_cb* no_password = [](char*, int, int, void*) { return 0; };
    std::unique_ptr<EVP_PKEY, KeyFree> key(
        PEM_read_bio_PrivateKey(bio.get(), nullptr, no_password, nullptr));
    ERR_clear_error();
    if (key == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(prefix, "key=", files.key,
                       ": the PRIVATE KEY block does not parse (an encrypted key is not read)"));
    }
    if (X509_check_private_key(chain.front().get(), key.get()) != 1) {
      ERR_clear_error();
      return absl::InvalidArgumentError(
          absl::StrCat(prefix, "key=", files.key, " is not the private key of the certificate in ",
                       prefix, "cert=", files.cert));
    }
  }
  if (!pems.ca.empty() && ParseCertificates(pems.ca).empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "ca=", files.ca, ": a CERTIFICATE block does not parse as X.509"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Pems> ReadAll(const TlsFiles& files) {
  Pems pems;
  if (!files.cert.empty()) {
    auto cert = ReadPemFile(files.cert, files.flag_prefix + "cert", "CERTIFICATE");
    if (!cert.ok()) return cert.status();
    pems.cert = *std::move(cert);
    auto key = ReadPemFile(files.key, files.flag_prefix + "key", "PRIVATE KEY");
    if (!key.ok()) return key.status();
    pems.key = *std::move(key);
  }
  if (!files.ca.empty()) {
    auto ca = ReadPemFile(files.ca, files.flag_prefix + "ca", "CERTIFICATE");
    if (!ca.ok()) return ca.status();
    pems.ca = *std::move(ca);
  }
  if (absl::Status parsed = CheckPems(pems, files); !parsed.ok()) return parsed;
  return pems;
}

}  // namespace

absl::StatusOr<std::string> ReadPemFile(const std::string& path, const std::string& flag,
                                        const std::string& kind) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, "=", path, ": is a directory, not a file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, "=", path, ": cannot read the file: ", std::strerror(errno)));
  }
  std::string text(kMaxPemBytes + 1, '\0');
  in.read(text.data(), kMaxPemBytes + 1);
  if (in.bad()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, "=", path, ": error reading the file"));
  }
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > static_cast<size_t>(kMaxPemBytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, "=", path, ": larger than ", kMaxPemBytes, " bytes, not a PEM file"));
  }
  if (!HasPemBlock(text, kind)) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, "=", path, ": no PEM \"-----BEGIN ", kind, "-----\" block in the file"));
  }
  return text;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files) {
  if (!files.enabled()) return nullptr;  // plaintext: ServeOptions::credentials' null
  if (absl::Status pair = CheckPair(files); !pair.ok()) return pair;
  if (files.cert.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        files.flag_prefix, "ca needs ", files.flag_prefix, "cert and ", files.flag_prefix,
        "key: a server presents its own certificate before it can verify its clients'"));
  }
  auto pems = ReadAll(files);
  if (!pems.ok()) return pems.status();
  grpc::SslServerCredentialsOptions options(
      pems->ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                       : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = pems->ca;
  options.pem_key_cert_pairs.push_back({pems->key, pems->cert});
  return grpc::SslServerCredentials(options);
}

ChannelSecurity ChannelSecurity::Plaintext() {
  ChannelSecurity security;
  security.credentials = grpc::InsecureChannelCredentials();
  return security;
}

void ChannelSecurity::Apply(grpc::ChannelArguments* args) const {
  if (!server_name.empty()) args->SetSslTargetNameOverride(server_name);
}

absl::StatusOr<ChannelSecurity> MakeChannelSecurity(const TlsFiles& files) {
  if (!files.enabled()) {
    if (!files.server_name.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          files.flag_prefix, "server_name needs TLS: give ", files.flag_prefix, "ca too"));
    }
    ChannelSecurity plaintext = ChannelSecurity::Plaintext();
    plaintext.flag_prefix = files.flag_prefix;
    return plaintext;
  }
  if (absl::Status pair = CheckPair(files); !pair.ok()) return pair;
  auto pems = ReadAll(files);
  if (!pems.ok()) return pems.status();
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = pems->ca;  // empty: the system's roots
  options.pem_cert_chain = pems->cert;
  options.pem_private_key = pems->key;
  ChannelSecurity security;
  security.credentials = grpc::SslCredentials(options);
  security.server_name = files.server_name;
  security.tls = true;
  security.flag_prefix = files.flag_prefix;
  return security;
}

const char* ServerTlsMode(const TlsFiles& files) {
  if (!files.enabled()) return "plaintext";
  return files.ca.empty() ? "TLS" : "mutual TLS";
}

const char* ClientTlsMode(const TlsFiles& files) {
  if (!files.enabled()) return "plaintext";
  return files.cert.empty() ? "TLS" : "mutual TLS";
}

}  // namespace moe
