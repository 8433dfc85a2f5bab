#include "common/checkpoint/fingerprint.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status/status_macros.h"

namespace moe {
namespace {

// Bytes sampled at each end of a tensor's data.
constexpr size_t kSampleBytes = 64;

class Fnv1a64 {
 public:
  void Add(const void* data, size_t size) {
    const auto* bytes = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < size; ++i) {
      hash_ = (hash_ ^ bytes[i]) * 0x100000001b3ull;
    }
  }
  void Add(absl::string_view text) {
    Add(text.data(), text.size());
    Add("\0", 1);  // so that "ab"+"c" and "a"+"bc" differ
  }
  void Add(int64_t value) { Add(&value, sizeof(value)); }
  uint64_t hash() const { return hash_; }

 private:
  uint64_t hash_ = 0xcbf29ce484222325ull;
};

}  // namespace

absl::StatusOr<std::string> CheckpointFingerprint(Checkpoint& checkpoint) {
  Fnv1a64 fnv;
  ASSIGN_OR_RETURN(std::string config, checkpoint.ReadConfigText());
  fnv.Add(config);
  for (const std::string& name : checkpoint.TensorNames()) {
    absl::StatusOr<const SafetensorsFile*> opened = checkpoint.FileFor(name);
    if (!opened.ok()) {
      return absl::Status(
          opened.status().code(),
          absl::StrCat("tensor '", name, "': ", opened.status().message(),
                       " (every file the checkpoint's index lists must be present: its "
                       "fingerprint samples a few bytes of every tensor, so that router and "
                       "shards agree they serve the same weights)"));
    }
    const SafetensorsFile* file = *opened;
    const TensorInfo* info = file->Find(name);
    if (info == nullptr) {
      return absl::NotFoundError(
          absl::StrCat("tensor '", name, "' is not in ", file->path(), " as the index says"));
    }
    fnv.Add(name);
    fnv.Add(static_cast<int64_t>(info->dtype));
    for (int64_t dim : info->shape) fnv.Add(dim);
    ASSIGN_OR_RETURN(absl::Span<const uint8_t> data, file->RawData(name));
    if (data.size() <= 2 * kSampleBytes) {
      fnv.Add(data.data(), data.size());
    } else {
      fnv.Add(data.data(), kSampleBytes);
      fnv.Add(data.data() + data.size() - kSampleBytes, kSampleBytes);
    }
  }
  return absl::StrFormat("fnv1a64:%016x", fnv.hash());
}

}  // namespace moe
