#include "router_service/shards_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moe {
namespace {

absl::Status CannotRead(const std::string& path) {
  return absl::NotFoundError(absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
}

// The bytes of the open file `fd`, refused once past kMaxBytes: the size stat gives is checked
// first, and the reading stops at the limit anyway (a file that grows, a device).
absl::StatusOr<std::string> ReadBounded(int fd, const std::string& path) {
  const std::string limit = absl::StrCat("the limit of ", ShardsFile::kMaxBytes, " bytes");
  struct stat info;
  if (fstat(fd, &info) != 0) return CannotRead(path);
  if (info.st_size > ShardsFile::kMaxBytes) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " is ", info.st_size, " bytes, more than ", limit));
  }
  std::string text;
  char chunk[16384];
  while (true) {
    const ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return CannotRead(path);
    if (n == 0) return text;
    text.append(chunk, static_cast<size_t>(n));
    if (static_cast<int64_t>(text.size()) > ShardsFile::kMaxBytes) {
      return absl::FailedPreconditionError(absl::StrCat(path, " holds more than ", limit));
    }
  }
}

// The file's bytes, at most kMaxBytes of them.
absl::StatusOr<std::string> Contents(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return CannotRead(path);
  absl::StatusOr<std::string> text = ReadBounded(fd, path);
  close(fd);
  return text;
}

std::string AsList(std::string text) {
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ',';
  }
  return text;
}

}  // namespace

ShardsFile::ShardsFile(std::string path, int num_experts, bool has_shared, Log log)
    : path_(std::move(path)),
      num_experts_(num_experts),
      has_shared_(has_shared),
      log_(log ? std::move(log) : [](const std::string& line) { std::cerr << line << std::endl; }) {
}

absl::StatusOr<std::string> ShardsFile::Read(const std::string& path) {
  absl::StatusOr<std::string> text = Contents(path);
  if (!text.ok()) return text.status();
  return AsList(*std::move(text));
}

std::optional<std::vector<ShardTarget>> ShardsFile::Changed() {
  absl::StatusOr<std::string> text = Contents(path_);
  if (!text.ok()) {
    if (text.status().message() != read_problem_) {
      read_problem_ = std::string(text.status().message());
      log_(absl::StrCat("moe_router: ", read_problem_, "; keeping the previous shard list"));
    }
    return std::nullopt;
  }
  read_problem_.clear();
  if (seen_ == *text) return std::nullopt;
  seen_ = *std::move(text);
  // Parsed once per content: one that does not parse is logged once, however often it is polled.
  absl::StatusOr<std::vector<ShardTarget>> targets =
      ParseShardTargets(AsList(*seen_), num_experts_, has_shared_);
  if (!targets.ok()) {
    log_(absl::StrCat("moe_router: ", path_, ": ", targets.status().message(),
                      "; keeping the previous shard list"));
    return std::nullopt;
  }
  log_(absl::StrCat("moe_router: ", path_, " changed: ", targets->size(),
                    targets->size() == 1 ? " target" : " targets"));
  return *std::move(targets);
}

}  // namespace moe
