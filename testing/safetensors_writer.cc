#include "testing/safetensors_writer.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/types/span.h"
#include "common/status/status_macros.h"

namespace moe {
namespace {

constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";

std::string JsonQuote(absl::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof(escaped), "\\u%04x", static_cast<unsigned char>(c));
          out += escaped;
        } else {
          out += c;
        }
    }
  }
  out += "\"";
  return out;
}

// Byte size of the stored tensor, after checking that its shape and values agree.
absl::StatusOr<uint64_t> CheckedByteSize(const TensorToWrite& tensor) {
  if (tensor.name.empty() || tensor.name == "__metadata__") {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid tensor name '", tensor.name, "' for a safetensors file"));
  }
  uint64_t elements = 1;
  for (int64_t dim : tensor.shape) {
    if (dim < 0 || __builtin_mul_overflow(elements, static_cast<uint64_t>(dim), &elements)) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", tensor.name, ": invalid shape [",
                                                     absl::StrJoin(tensor.shape, ", "), "]"));
    }
  }
  if (!tensor.generate && tensor.values.size() != elements) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", tensor.name, ": shape [", absl::StrJoin(tensor.shape, ", "),
                     "] needs ", elements, " values, got ", tensor.values.size()));
  }
  return elements * static_cast<uint64_t>(DTypeSize(tensor.dtype));
}

// Sorted by name, duplicates rejected: the on-disk layout must not depend on caller order.
absl::StatusOr<std::vector<const TensorToWrite*>> SortedByName(
    const std::vector<TensorToWrite>& tensors) {
  std::vector<const TensorToWrite*> sorted;
  for (const TensorToWrite& t : tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(),
            [](const TensorToWrite* a, const TensorToWrite* b) { return a->name < b->name; });
  for (size_t i = 1; i < sorted.size(); ++i) {
    if (sorted[i]->name == sorted[i - 1]->name) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor name '", sorted[i]->name, "' appears twice"));
    }
  }
  return sorted;
}

// Writes the tensor's values in the stored dtype, a chunk at a time.
bool WriteValues(const TensorToWrite& tensor, uint64_t elements, std::FILE* f) {
  constexpr uint64_t kChunk = uint64_t{1} << 20;
  std::vector<float> values(tensor.generate ? std::min(kChunk, elements) : 0);
  std::vector<uint16_t> halves(tensor.dtype == DType::kF32 ? 0 : std::min(kChunk, elements));
  for (uint64_t first = 0; first < elements; first += kChunk) {
    const uint64_t count = std::min(kChunk, elements - first);
    const float* chunk = tensor.values.data() + first;
    if (tensor.generate) {
      tensor.generate(static_cast<int64_t>(first), static_cast<int64_t>(count), values.data());
      chunk = values.data();
    }
    // Host order is little-endian (x86_64), which is what safetensors stores.
    if (tensor.dtype == DType::kF32) {
      if (std::fwrite(chunk, sizeof(float), count, f) != count) return false;
      continue;
    }
    for (uint64_t i = 0; i < count; ++i) {
      halves[i] = tensor.dtype == DType::kBF16 ? F32ToBf16(chunk[i]) : F32ToF16(chunk[i]);
    }
    if (std::fwrite(halves.data(), sizeof(uint16_t), count, f) != count) return false;
  }
  return true;
}

// Writes to a temporary name first so a reader never maps a half-written file: `write` gets the
// open file and says whether every byte went out.
absl::Status WriteFileAtomically(const std::string& path,
                                 const std::function<bool(std::FILE*)>& write) {
  const std::string temp = absl::StrCat(path, ".tmp.", ::getpid());
  std::FILE* f = std::fopen(temp.c_str(), "wb");
  if (f == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot create ", temp, ": ", std::strerror(errno)));
  }
  const bool written = write(f);
  const bool closed = std::fclose(f) == 0;
  if (!written || !closed) {
    std::remove(temp.c_str());
    return absl::UnavailableError(absl::StrCat("error writing ", temp));
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(temp.c_str());
    return absl::UnavailableError(
        absl::StrCat("cannot rename ", temp, " to ", path, ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::string& path, const std::string& contents) {
  return WriteFileAtomically(path, [&contents](std::FILE* f) {
    return std::fwrite(contents.data(), 1, contents.size(), f) == contents.size();
  });
}

// `sorted` must already be validated and in name order.
absl::Status WriteSorted(const std::string& path, absl::Span<const TensorToWrite* const> sorted) {
  std::string header = "{";
  uint64_t offset = 0;
  std::vector<uint64_t> elements;
  for (const TensorToWrite* t : sorted) {
    ASSIGN_OR_RETURN(uint64_t bytes, CheckedByteSize(*t));
    elements.push_back(bytes / static_cast<uint64_t>(DTypeSize(t->dtype)));
    if (header.size() > 1) header += ",";
    absl::StrAppend(&header, JsonQuote(t->name), ":{\"dtype\":\"", DTypeName(t->dtype),
                    "\",\"shape\":[", absl::StrJoin(t->shape, ","), "],\"data_offsets\":[", offset,
                    ",", offset + bytes, "]}");
    offset += bytes;
  }
  header += "}";
  // Padding with spaces (valid JSON whitespace) keeps the data section 8-byte aligned, as the
  // reference implementation does.
  header.append((8 - header.size() % 8) % 8, ' ');

  return WriteFileAtomically(path, [&](std::FILE* f) {
    const uint64_t header_size = header.size();
    if (std::fwrite(&header_size, sizeof(header_size), 1, f) != 1 ||
        std::fwrite(header.data(), 1, header.size(), f) != header.size()) {
      return false;
    }
    for (size_t i = 0; i < sorted.size(); ++i) {
      if (!WriteValues(*sorted[i], elements[i], f)) return false;
    }
    return true;
  });
}

// Splits `sizes` into `num_shards` contiguous non-empty runs whose byte totals are as close as a
// greedy pass can get to equal. Returns the index one past each run.
std::vector<size_t> BalancedSplit(const std::vector<uint64_t>& sizes, int num_shards) {
  std::vector<double> prefix(sizes.size() + 1, 0.0);
  for (size_t i = 0; i < sizes.size(); ++i) prefix[i + 1] = prefix[i] + sizes[i];
  std::vector<size_t> ends;
  size_t end = 0;
  const size_t shards = static_cast<size_t>(num_shards);
  for (size_t s = 0; s + 1 < shards; ++s) {
    const double target = prefix.back() * static_cast<double>(s + 1) / num_shards;
    const size_t latest = sizes.size() - (shards - 1 - s);  // leaves one tensor per later shard
    ++end;
    while (end < latest && std::abs(prefix[end + 1] - target) <= std::abs(prefix[end] - target)) {
      ++end;
    }
    ends.push_back(end);
  }
  ends.push_back(sizes.size());
  return ends;
}

}  // namespace

absl::Status WriteSafetensorsFile(const std::string& path,
                                  const std::vector<TensorToWrite>& tensors) {
  ASSIGN_OR_RETURN(std::vector<const TensorToWrite*> sorted, SortedByName(tensors));
  return WriteSorted(path, sorted);
}

absl::Status CheckShardCount(size_t tensors, int num_shards) {
  if (num_shards < 1 || (num_shards > 1 && static_cast<size_t>(num_shards) > tensors)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot split ", tensors, " tensors into ", num_shards, " non-empty shards"));
  }
  return absl::OkStatus();
}

absl::Status WriteCheckpointTensors(const std::string& dir,
                                    const std::vector<TensorToWrite>& tensors, int num_shards) {
  RETURN_IF_ERROR(CheckShardCount(tensors.size(), num_shards));
  ASSIGN_OR_RETURN(std::vector<const TensorToWrite*> sorted, SortedByName(tensors));
  if (num_shards == 1) return WriteSorted(absl::StrCat(dir, "/", kSingleFile), sorted);

  std::vector<uint64_t> sizes;
  uint64_t total_size = 0;
  for (const TensorToWrite* t : sorted) {
    ASSIGN_OR_RETURN(uint64_t bytes, CheckedByteSize(*t));
    sizes.push_back(bytes);
    total_size += bytes;
  }
  std::vector<std::string> weight_map_lines;
  size_t begin = 0;
  int shard = 0;
  for (size_t end : BalancedSplit(sizes, num_shards)) {
    char file_name[64];
    std::snprintf(file_name, sizeof(file_name), "model-%05d-of-%05d.safetensors", ++shard,
                  num_shards);
    absl::Span<const TensorToWrite* const> run(sorted.data() + begin, end - begin);
    RETURN_IF_ERROR(WriteSorted(absl::StrCat(dir, "/", file_name), run));
    for (const TensorToWrite* t : run) {
      weight_map_lines.push_back(absl::StrCat("    ", JsonQuote(t->name), ": \"", file_name, "\""));
    }
    begin = end;
  }
  const std::string index = absl::StrCat("{\n  \"metadata\": {\n    \"total_size\": ", total_size,
                                         "\n  },\n  \"weight_map\": {\n",
                                         absl::StrJoin(weight_map_lines, ",\n"), "\n  }\n}\n");
  return WriteFileAtomically(absl::StrCat(dir, "/", kIndexFile), index);
}

bool IsCheckpointFileName(absl::string_view file_name) {
  if (file_name == "config.json" || file_name == kSingleFile || file_name == kIndexFile) {
    return true;
  }
  if (!absl::ConsumePrefix(&file_name, "model-") ||
      !absl::ConsumeSuffix(&file_name, ".safetensors")) {
    return false;
  }
  const size_t of = file_name.find("-of-");
  if (of == absl::string_view::npos) return false;
  const auto is_number = [](absl::string_view digits) {
    return !digits.empty() &&
           std::all_of(digits.begin(), digits.end(), [](char c) { return absl::ascii_isdigit(c); });
  };
  return is_number(file_name.substr(0, of)) && is_number(file_name.substr(of + 4));
}

absl::StatusOr<int> RemoveCheckpointFiles(const std::string& dir) {
  std::error_code code;
  std::filesystem::directory_iterator it(dir, code);
  if (code) return 0;  // no directory yet: nothing to remove
  int removed = 0;
  for (const std::filesystem::directory_entry& entry : it) {
    if (!entry.is_regular_file(code) || !IsCheckpointFileName(entry.path().filename().string())) {
      continue;
    }
    const bool was_there = std::filesystem::remove(entry.path(), code);
    if (code) {
      return absl::InternalError(
          absl::StrCat("cannot remove ", entry.path().string(), ": ", code.message()));
    }
    removed += was_there;
  }
  return removed;
}

}  // namespace moe
