#include "router_service/shards_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace moe {

absl::StatusOr<std::string> ShardsFile::Read(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  }
  std::stringstream text;
  text << in.rdbuf();
  std::string list = text.str();
  for (char& c : list) {
    if (c == '\n' || c == '\r') c = ',';
  }
  return list;
}

std::optional<std::vector<ShardTarget>> ShardsFile::Changed() {
  struct stat info;
  if (stat(path_.c_str(), &info) != 0) return std::nullopt;
  if (info.st_mtim.tv_sec == last_.tv_sec && info.st_mtim.tv_nsec == last_.tv_nsec) {
    return std::nullopt;
  }
  last_ = info.st_mtim;
  const absl::StatusOr<std::string> list = Read(path_);
  const absl::StatusOr<std::vector<ShardTarget>> targets =
      list.ok() ? ParseShardTargets(*list, num_experts_, has_shared_)
                : absl::StatusOr<std::vector<ShardTarget>>(list.status());
  if (!targets.ok()) {
    std::cerr << "moe_router: " << path_ << ": " << targets.status().message()
              << "; keeping the previous shard list" << std::endl;
    return std::nullopt;
  }
  std::cerr << "moe_router: " << path_ << " changed: " << targets->size()
            << (targets->size() == 1 ? " target" : " targets") << std::endl;
  return *targets;
}

}  // namespace moe
