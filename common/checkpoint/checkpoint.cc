#include "common/checkpoint/checkpoint.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/checkpoint/json.h"
#include "common/status/status_macros.h"
#include "common/tensor/finite.h"

namespace moe {
namespace {

constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    const int err = errno;
    std::string message = absl::StrCat("cannot read ", path, ": ", std::strerror(err));
    if (err == ENOENT) return absl::NotFoundError(message);
    return absl::UnavailableError(message);
  }
  // config.json and the index are kilobytes (a large index a few MB); a bound keeps a wrong
  // file (a symlink to /dev/zero, a weights file by mistake) from being read without end.
  constexpr size_t kMaxTextBytes = 64 << 20;
  std::string text;
  char buffer[1 << 16];
  size_t n;
  while (text.size() <= kMaxTextBytes && (n = std::fread(buffer, 1, sizeof(buffer), f)) > 0) {
    text.append(buffer, n);
  }
  const int err = std::ferror(f) != 0 ? errno : 0;
  std::fclose(f);
  if (err != 0) {
    return absl::UnavailableError(absl::StrCat("error reading ", path, ": ", std::strerror(err)));
  }
  if (text.size() > kMaxTextBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is larger than ", kMaxTextBytes >> 20, " MiB: not a JSON file"));
  }
  return text;
}

// Shard names come from a file anyone could have edited; a name with a path in it could make us
// map files outside the checkpoint directory.
bool IsPlainFileName(absl::string_view name) {
  return !name.empty() && !absl::StrContains(name, '/') && !absl::StrContains(name, "..") &&
         !absl::StrContains(name, '\0');
}

absl::StatusOr<std::map<std::string, std::string>> ParseIndex(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadTextFile(path));
  ASSIGN_OR_RETURN(Json index, ParseJsonObject(text, path));
  auto it = index.find("weight_map");
  if (it == index.end() || !it->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": \"weight_map\" is missing or not an object"));
  }
  std::map<std::string, std::string> weight_map;
  for (const auto& [name, file] : it->items()) {
    if (!file.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": weight_map entry for '", name, "' is not a file name string"));
    }
    const std::string& file_name = file.get_ref<const std::string&>();
    if (!IsPlainFileName(file_name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": weight_map entry for '", name, "' names file '", file_name,
                       "', which is not a plain file name in the directory"));
    }
    weight_map.emplace(name, file_name);
  }
  return weight_map;
}

std::string ShapeString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// A NaN or infinity in a weight would make every token that meets it fail as an overflow of the
// client's input; refused here, naming where it is. One vectorised pass over values just read.
absl::Status CheckFinite(absl::string_view name, const std::string& path,
                         absl::Span<const float> values, int64_t cols, bool matrix) {
  const int64_t i = FirstNonFinite(values);
  if (i < 0) return absl::OkStatus();
  const std::string at =
      matrix ? absl::StrCat("[", i / cols, ", ", i % cols, "]") : absl::StrCat("[", i, "]");
  return absl::InvalidArgumentError(absl::StrCat(
      "tensor ", name, " in ", path, " holds ", values[i], " at ", at, ": weights must be finite"));
}

}  // namespace

Checkpoint::Checkpoint(std::string dir, std::map<std::string, std::string> weight_map)
    : dir_(std::move(dir)), weight_map_(std::move(weight_map)) {}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  struct stat dir_stat;
  if (::stat(dir.c_str(), &dir_stat) != 0) {
    const int err = errno;
    std::string message = absl::StrCat("checkpoint directory ", dir, " ",
                                       err == ENOENT ? "does not exist" : std::strerror(err));
    if (err == ENOENT) return absl::NotFoundError(message);
    return absl::UnavailableError(message);
  }
  if (!S_ISDIR(dir_stat.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint directory ", dir, " is not a directory"));
  }
  const std::string index_path = absl::StrCat(dir, "/", kIndexFile);
  if (FileExists(index_path)) {
    ASSIGN_OR_RETURN(auto weight_map, ParseIndex(index_path));
    return std::unique_ptr<Checkpoint>(new Checkpoint(dir, std::move(weight_map)));
  }
  const std::string single_path = absl::StrCat(dir, "/", kSingleFile);
  if (FileExists(single_path)) {
    // Without an index the file itself is the only list of tensors, so it is opened now.
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(single_path));
    std::map<std::string, std::string> weight_map;
    for (const auto& entry : file->tensors()) weight_map.emplace(entry.first, kSingleFile);
    auto checkpoint = std::unique_ptr<Checkpoint>(new Checkpoint(dir, std::move(weight_map)));
    checkpoint->open_files_.emplace(kSingleFile, std::move(file));
    return checkpoint;
  }
  return absl::NotFoundError(absl::StrCat("neither ", kSingleFile, " nor ", kIndexFile,
                                          " exists in checkpoint directory ", dir));
}

absl::StatusOr<std::string> Checkpoint::ReadConfigText() const {
  return ReadTextFile(absl::StrCat(dir_, "/config.json"));
}

bool Checkpoint::Contains(absl::string_view name) const {
  return weight_map_.find(std::string(name)) != weight_map_.end();
}

std::vector<std::string> Checkpoint::TensorNames() const {
  std::vector<std::string> names;
  for (const auto& [name, file] : weight_map_) names.push_back(name);
  return names;
}

absl::StatusOr<const SafetensorsFile*> Checkpoint::FileFor(absl::string_view name) {
  auto it = weight_map_.find(std::string(name));
  if (it == weight_map_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor '", name, "' not found in checkpoint ", dir_));
  }
  const std::string& file_name = it->second;
  auto open_it = open_files_.find(file_name);
  if (open_it == open_files_.end()) {
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file,
                     SafetensorsFile::Open(absl::StrCat(dir_, "/", file_name)));
    open_it = open_files_.emplace(file_name, std::move(file)).first;
  }
  const SafetensorsFile* file = open_it->second.get();
  if (file->Find(name) == nullptr) {
    return absl::NotFoundError(absl::StrCat("tensor '", name, "' not found in checkpoint ", dir_,
                                            ": the index names ", file->path(),
                                            ", which has no such tensor"));
  }
  return file;
}

absl::StatusOr<TensorInfo> Checkpoint::Info(absl::string_view name) {
  ASSIGN_OR_RETURN(const SafetensorsFile* file, FileFor(name));
  return *file->Find(name);
}

absl::StatusOr<Matrix> Checkpoint::ReadMatrix(absl::string_view name, int64_t rows, int64_t cols) {
  ASSIGN_OR_RETURN(const SafetensorsFile* file, FileFor(name));
  const std::vector<int64_t>& shape = file->Find(name)->shape;
  if (shape != std::vector<int64_t>{rows, cols}) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " in ", file->path(),
                                                   " has shape ", ShapeString(shape), ", expected ",
                                                   ShapeString({rows, cols})));
  }
  ASSIGN_OR_RETURN(std::vector<float> values, file->ReadF32(name));
  RETURN_IF_ERROR(CheckFinite(name, file->path(), values, cols, /*matrix=*/true));
  return Matrix(rows, cols, values);
}

absl::StatusOr<std::vector<float>> Checkpoint::ReadVector(absl::string_view name, int64_t size) {
  ASSIGN_OR_RETURN(const SafetensorsFile* file, FileFor(name));
  const std::vector<int64_t>& shape = file->Find(name)->shape;
  if (shape != std::vector<int64_t>{size}) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " in ", file->path(),
                                                   " has shape ", ShapeString(shape), ", expected ",
                                                   ShapeString({size})));
  }
  ASSIGN_OR_RETURN(std::vector<float> values, file->ReadF32(name));
  RETURN_IF_ERROR(CheckFinite(name, file->path(), values, size, /*matrix=*/false));
  return values;
}

}  // namespace moe
