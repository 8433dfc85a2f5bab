// Fetches a URL's body with HTTP GET (cpp-httplib), for moe_placement's --load=http://...
// Blocking, thread-safe. Unavailable if the server cannot be reached or answers other than 200;
// InvalidArgument for a URL that is not http(s)://HOST[:PORT]/PATH.
#ifndef MOE_TOOLS_PLACEMENT_HTTP_GET_H_
#define MOE_TOOLS_PLACEMENT_HTTP_GET_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace moe {

absl::StatusOr<std::string> HttpGet(absl::string_view url, absl::Duration timeout);

}  // namespace moe

#endif  // MOE_TOOLS_PLACEMENT_HTTP_GET_H_
