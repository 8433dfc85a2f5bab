// The router's --shards_file: a --shards list, one TARGET or SPEC@TARGET per line, re-read when
// its modification time changes so that shards can be added, moved or removed without a restart.
// A change that does not parse is logged and ignored: the previous list stays.
#ifndef MOE_ROUTER_SERVICE_SHARDS_FILE_H_
#define MOE_ROUTER_SERVICE_SHARDS_FILE_H_

#include <sys/stat.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "router_service/shard_targets.h"

namespace moe {

class ShardsFile {
 public:
  ShardsFile(std::string path, int num_experts, bool has_shared)
      : path_(std::move(path)), num_experts_(num_experts), has_shared_(has_shared) {}

  // The file's contents as a --shards list (lines joined by commas), or why it cannot be read.
  static absl::StatusOr<std::string> Read(const std::string& path);

  // The new list when the file changed since the last call (every call until it first parses),
  // nullopt when it did not, or does not parse (logged).
  std::optional<std::vector<ShardTarget>> Changed();

 private:
  const std::string path_;
  const int num_experts_;
  const bool has_shared_;
  timespec last_{};
};

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_SHARDS_FILE_H_
