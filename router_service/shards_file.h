// The router's --shards_file: a --shards list, one TARGET or SPEC@TARGET per line (or commas), so
// that shards can be added, moved or removed without a restart. Each poll reads the file (at most
// kMaxBytes) and compares its bytes with those the last poll read: change is decided by content,
// never by the modification time, which a coarse clock makes the same for writes a few ms apart.
// So a rewrite within one tick is read, and a non-atomic rewrite polled halfway is read whole at
// the first poll after the rest lands. Replace the file by rename() all the same: a half-written
// list that happens to parse is applied until then.
// A content that does not parse, a file that cannot be read and one over kMaxBytes (refused by
// its size, or once reading passes the limit: memory stays bounded) are logged once each, and the
// previous list stays. Not thread-safe: one caller at a time (the directory's refresher).
#ifndef MOE_ROUTER_SERVICE_SHARDS_FILE_H_
#define MOE_ROUTER_SERVICE_SHARDS_FILE_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "router_service/shard_targets.h"

namespace moe {

class ShardsFile {
 public:
  // 1 MiB: tens of thousands of targets, far more than a deployment lists.
  static constexpr int64_t kMaxBytes = int64_t{1} << 20;
  // Takes each log line (no trailing newline).
  using Log = std::function<void(const std::string& line)>;

  // `log` unset: the lines go to std::cerr.
  ShardsFile(std::string path, int num_experts, bool has_shared, Log log = nullptr);

  // The file's contents as a --shards list (lines joined by commas); NotFound when it cannot be
  // read, FailedPrecondition naming the path, its size and kMaxBytes when it is larger.
  static absl::StatusOr<std::string> Read(const std::string& path);

  // The new list when the file's contents differ from those the last call read (the first call:
  // whatever it reads) and parse; else nullopt, the previous list standing.
  std::optional<std::vector<ShardTarget>> Changed();

 private:
  const std::string path_;
  const int num_experts_;
  const bool has_shared_;
  const Log log_;
  std::optional<std::string> seen_;  // the contents last read, parsed or not
  std::string read_problem_;         // the read error last logged, "" once the file reads again
};

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_SHARDS_FILE_H_
