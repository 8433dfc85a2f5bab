// The port file behind --port_file and --metrics_port_file: a server bound to port 0 tells
// scripts and tests which port it got.
#ifndef MOE_COMMON_CLI_PORT_FILE_H_
#define MOE_COMMON_CLI_PORT_FILE_H_

#include <string>

#include "absl/status/status.h"

namespace moe {

// Writes "PORT\n" to `path` atomically (a temporary file renamed), so a reader never sees a
// partial number.
absl::Status WritePortFile(const std::string& path, int port);

}  // namespace moe

#endif  // MOE_COMMON_CLI_PORT_FILE_H_
