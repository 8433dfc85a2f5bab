// Read access to one .safetensors file (https://huggingface.co/docs/safetensors): an 8-byte
// little-endian header length N, N bytes of JSON header, then the tensor data.
//
// Open() maps the file read-only and validates the whole header before returning: header length
// within the file, valid JSON, known dtype, non-negative shape, data_offsets in range, sized
// exactly product(shape) * dtype size, and no two tensors overlapping. Tensor bytes are only
// touched when read, so pages of tensors nobody reads never become resident.
//
// Errors name the file and, where there is one, the tensor. Thread-safe after Open (read-only).
#ifndef MOE_COMMON_CHECKPOINT_SAFETENSORS_FILE_H_
#define MOE_COMMON_CHECKPOINT_SAFETENSORS_FILE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/tensor/dtype.h"

namespace moe {

struct TensorInfo {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section, [begin, end)
  uint64_t end = 0;

  int64_t num_elements() const;
};

class SafetensorsFile {
 public:
  // InvalidArgument for a malformed file, NotFound if `path` does not exist.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }

  // nullptr when the file holds no tensor of that name.
  const TensorInfo* Find(absl::string_view name) const;

  // The tensor's stored bytes (in its own dtype). NotFound naming tensor and file.
  absl::StatusOr<absl::Span<const uint8_t>> RawData(absl::string_view name) const;

  // The tensor converted to float32, row-major. NotFound naming tensor and file.
  absl::StatusOr<std::vector<float>> ReadF32(absl::string_view name) const;

 private:
  SafetensorsFile(std::string path, const uint8_t* map, size_t map_size, const uint8_t* data,
                  std::map<std::string, TensorInfo> tensors);

  std::string path_;
  const uint8_t* map_;  // whole file, owned (munmap in the destructor)
  size_t map_size_;
  const uint8_t* data_;  // start of the data section inside map_
  std::map<std::string, TensorInfo> tensors_;
};

}  // namespace moe

#endif  // MOE_COMMON_CHECKPOINT_SAFETENSORS_FILE_H_
