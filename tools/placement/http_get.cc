#include "tools/placement/http_get.h"

#include <httplib.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace moe {

absl::StatusOr<std::string> HttpGet(absl::string_view url, absl::Duration timeout) {
  const size_t scheme_end = url.find("://");
  if (scheme_end == absl::string_view::npos ||
      !(absl::StartsWith(url, "http://") || absl::StartsWith(url, "https://"))) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", url, "\": want http://HOST:PORT/PATH or https://..."));
  }
  const size_t path_start = url.find('/', scheme_end + 3);
  const std::string origin(url.substr(0, path_start));
  const std::string path =
      path_start == absl::string_view::npos ? "/" : std::string(url.substr(path_start));

  httplib::Client client(origin);
  if (!client.is_valid()) {
    return absl::InvalidArgumentError(absl::StrCat("\"", url, "\": not a valid HTTP origin"));
  }
  const auto micros = absl::ToInt64Microseconds(timeout);
  client.set_connection_timeout(micros / 1000000, micros % 1000000);
  client.set_read_timeout(micros / 1000000, micros % 1000000);
  httplib::Result result = client.Get(path);
  if (!result) {
    return absl::UnavailableError(
        absl::StrCat("GET ", url, ": ", httplib::to_string(result.error())));
  }
  if (result->status != 200) {
    return absl::UnavailableError(absl::StrCat("GET ", url, ": HTTP ", result->status));
  }
  return result->body;
}

}  // namespace moe
