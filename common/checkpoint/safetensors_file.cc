#include "common/checkpoint/safetensors_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/checkpoint/json.h"
#include "common/status/status_macros.h"

namespace moe {
namespace {

// The reference implementation refuses larger headers too; it bounds what a hostile file can
// make us parse.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

absl::Status Invalid(absl::string_view path, absl::string_view tensor, absl::string_view message) {
  if (tensor.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", message));
  return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", tensor, "': ", message));
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Reads a JSON array of non-negative integers.
absl::StatusOr<std::vector<int64_t>> ReadIntArray(const Json& value, absl::string_view path,
                                                  absl::string_view tensor, absl::string_view key) {
  if (!value.is_array()) {
    return Invalid(path, tensor, absl::StrCat("\"", key, "\" must be an array of integers"));
  }
  std::vector<int64_t> out;
  for (const Json& item : value) {
    if (!item.is_number()) {
      return Invalid(path, tensor, absl::StrCat("\"", key, "\" must be an array of integers"));
    }
    absl::StatusOr<int64_t> as_int = JsonToInt(
        item, 0, absl::StrCat(path, ": tensor '", tensor, "': an entry of \"", key, "\""));
    if (!as_int.ok()) return as_int.status();
    out.push_back(*as_int);
  }
  return out;
}

absl::Status CheckMetadata(const Json& value, absl::string_view path) {
  if (!value.is_object()) {
    return Invalid(path, "", "\"__metadata__\" must be an object of strings");
  }
  for (const auto& [key, item] : value.items()) {
    if (!item.is_string()) {
      return Invalid(path, "",
                     absl::StrCat("\"__metadata__\" must be an object of strings, but \"", key,
                                  "\" is not a string"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<TensorInfo> ParseEntry(const std::string& name, const Json& entry,
                                      uint64_t data_size, absl::string_view path) {
  if (!entry.is_object()) {
    return Invalid(path, name, "header entry must be a JSON object");
  }
  TensorInfo info;

  ASSIGN_OR_RETURN(std::optional<std::string> dtype_name, JsonString(entry, "dtype", path));
  if (!dtype_name.has_value()) return Invalid(path, name, "missing \"dtype\"");
  std::optional<DType> dtype = ParseDType(*dtype_name);
  if (!dtype.has_value()) {
    return Invalid(
        path, name,
        absl::StrCat("unsupported dtype \"", *dtype_name, "\" (supported dtypes: F32, F16, BF16)"));
  }
  info.dtype = *dtype;

  auto shape_it = entry.find("shape");
  if (shape_it == entry.end()) return Invalid(path, name, "missing \"shape\"");
  ASSIGN_OR_RETURN(info.shape, ReadIntArray(*shape_it, path, name, "shape"));

  auto offsets_it = entry.find("data_offsets");
  if (offsets_it == entry.end()) return Invalid(path, name, "missing \"data_offsets\"");
  ASSIGN_OR_RETURN(std::vector<int64_t> offsets,
                   ReadIntArray(*offsets_it, path, name, "data_offsets"));
  if (offsets.size() != 2) {
    return Invalid(path, name, "\"data_offsets\" must be [begin, end]");
  }
  info.begin = static_cast<uint64_t>(offsets[0]);
  info.end = static_cast<uint64_t>(offsets[1]);
  if (info.begin > info.end || info.end > data_size) {
    return Invalid(path, name,
                   absl::StrCat("data_offsets [", info.begin, ", ", info.end,
                                "] out of range of the ", data_size, "-byte data section"));
  }

  // Checked arithmetic: a hostile shape must not wrap around to a size that happens to match.
  uint64_t expected = static_cast<uint64_t>(DTypeSize(info.dtype));
  for (int64_t dim : info.shape) {
    if (__builtin_mul_overflow(expected, static_cast<uint64_t>(dim), &expected)) {
      return Invalid(path, name, absl::StrCat("shape ", ShapeString(info.shape), " is too large"));
    }
  }
  if (info.end - info.begin != expected) {
    return Invalid(path, name,
                   absl::StrCat("data_offsets span ", info.end - info.begin, " bytes but shape ",
                                ShapeString(info.shape), " of ", DTypeName(info.dtype), " needs ",
                                expected, " bytes"));
  }
  return info;
}

absl::Status CheckNoOverlap(const std::map<std::string, TensorInfo>& tensors,
                            absl::string_view path) {
  std::vector<std::tuple<uint64_t, uint64_t, const std::string*>> ranges;
  for (const auto& [name, info] : tensors) {
    // An empty range holds no bytes, so it cannot collide with anything.
    if (info.begin != info.end) ranges.emplace_back(info.begin, info.end, &name);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    const auto& [prev_begin, prev_end, prev_name] = ranges[i - 1];
    const auto& [begin, end, name] = ranges[i];
    if (begin < prev_end) {
      return Invalid(path, "",
                     absl::StrCat("tensors '", *prev_name, "' [", prev_begin, ", ", prev_end,
                                  ") and '", *name, "' [", begin, ", ", end, ") overlap"));
    }
  }
  return absl::OkStatus();
}

// Validates the header of a file mapped at `map` and returns its tensors.
absl::StatusOr<std::map<std::string, TensorInfo>> ParseHeader(const uint8_t* map, size_t size,
                                                              const std::string& path) {
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | map[i];  // little-endian
  if (header_size > kMaxHeaderBytes) {
    return Invalid(path, "",
                   absl::StrCat("header length ", header_size, " exceeds the limit of ",
                                kMaxHeaderBytes, " bytes (100 MB)"));
  }
  if (header_size > size - 8) {
    return Invalid(
        path, "",
        absl::StrCat("header length ", header_size, " runs past the end of the file: 8 + ",
                     header_size, " > file size ", size, " bytes"));
  }
  const uint64_t data_size = size - 8 - header_size;
  absl::string_view header(reinterpret_cast<const char*>(map + 8), header_size);
  absl::StatusOr<Json> json = ParseJsonObject(header, absl::StrCat(path, ": header"));
  if (!json.ok()) return json.status();

  std::map<std::string, TensorInfo> tensors;
  for (const auto& [name, value] : json->items()) {
    if (name == "__metadata__") {
      RETURN_IF_ERROR(CheckMetadata(value, path));
      continue;
    }
    ASSIGN_OR_RETURN(TensorInfo info, ParseEntry(name, value, data_size, path));
    tensors.emplace(name, std::move(info));
  }
  RETURN_IF_ERROR(CheckNoOverlap(tensors, path));
  return tensors;
}

}  // namespace

int64_t TensorInfo::num_elements() const {
  int64_t n = 1;
  for (int64_t dim : shape) n *= dim;  // cannot overflow: Open checked the byte size
  return n;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    std::string message = absl::StrCat("cannot open ", path, ": ", std::strerror(err));
    if (err == ENOENT) return absl::NotFoundError(message);
    if (err == EACCES) return absl::PermissionDeniedError(message);
    return absl::UnavailableError(message);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("cannot stat ", path, ": ", std::strerror(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Invalid(path, "", "not a regular file");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  // Checked before mmap, which refuses a zero-length mapping.
  if (size < 8) {
    ::close(fd);
    return Invalid(path, "",
                   absl::StrCat("file is ", size,
                                " bytes, too short for the 8-byte header length of a "
                                "safetensors file"));
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int mmap_errno = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (map == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot mmap ", path, ": ", std::strerror(mmap_errno)));
  }
  const uint8_t* bytes = static_cast<const uint8_t*>(map);
  absl::StatusOr<std::map<std::string, TensorInfo>> tensors = ParseHeader(bytes, size, path);
  if (!tensors.ok()) {
    ::munmap(map, size);
    return tensors.status();
  }
  uint64_t header_size;
  std::memcpy(&header_size, bytes, sizeof(header_size));  // little-endian host (x86_64)
  return std::unique_ptr<SafetensorsFile>(
      new SafetensorsFile(path, bytes, size, bytes + 8 + header_size, *std::move(tensors)));
}

SafetensorsFile::SafetensorsFile(std::string path, const uint8_t* map, size_t map_size,
                                 const uint8_t* data, std::map<std::string, TensorInfo> tensors)
    : path_(std::move(path)),
      map_(map),
      map_size_(map_size),
      data_(data),
      tensors_(std::move(tensors)) {}

SafetensorsFile::~SafetensorsFile() { ::munmap(const_cast<uint8_t*>(map_), map_size_); }

const TensorInfo* SafetensorsFile::Find(absl::string_view name) const {
  auto it = tensors_.find(std::string(name));
  return it == tensors_.end() ? nullptr : &it->second;
}

absl::StatusOr<absl::Span<const uint8_t>> SafetensorsFile::RawData(absl::string_view name) const {
  const TensorInfo* info = Find(name);
  if (info == nullptr) {
    return absl::NotFoundError(absl::StrCat("tensor '", name, "' not found in ", path_));
  }
  return absl::Span<const uint8_t>(data_ + info->begin, info->end - info->begin);
}

absl::StatusOr<std::vector<float>> SafetensorsFile::ReadF32(absl::string_view name) const {
  ASSIGN_OR_RETURN(absl::Span<const uint8_t> bytes, RawData(name));
  const TensorInfo& info = *Find(name);
  std::vector<float> out(static_cast<size_t>(info.num_elements()));
  // memcpy throughout: the data section starts at 8 + header length, which need not be aligned.
  if (info.dtype == DType::kF32) {
    if (!out.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
    return out;
  }
  for (size_t i = 0; i < out.size(); ++i) {
    uint16_t bits;
    std::memcpy(&bits, bytes.data() + 2 * i, sizeof(bits));
    out[i] = info.dtype == DType::kBF16 ? Bf16ToF32(bits) : F16ToF32(bits);
  }
  return out;
}

}  // namespace moe
