// A Hugging Face checkpoint directory: DIR/config.json plus either DIR/model.safetensors or
// DIR/model.safetensors.index.json naming the shard file of every tensor. Shard files are opened
// (mapped) on first use, so reading one layer touches only the files and bytes that hold it.
//
// Read* check the stored shape against the expected one, convert F16/BF16 to float32 and refuse
// a NaN or an infinity (every tensor read is a weight). Errors name the tensor, the file and, for
// shapes, both the stored and the expected shape, for values the first non-finite one's place.
// Not thread-safe: load from one thread, then drop the Checkpoint.
#ifndef MOE_COMMON_CHECKPOINT_CHECKPOINT_H_
#define MOE_COMMON_CHECKPOINT_CHECKPOINT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/checkpoint/safetensors_file.h"
#include "common/tensor/matrix.h"

namespace moe {

class Checkpoint {
 public:
  // NotFound if DIR has neither model.safetensors nor model.safetensors.index.json;
  // InvalidArgument for a malformed index (bad JSON, no weight_map, a file name with a path).
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }

  // Contents of DIR/config.json.
  absl::StatusOr<std::string> ReadConfigText() const;

  bool Contains(absl::string_view name) const;
  // Every tensor name the checkpoint holds, sorted.
  std::vector<std::string> TensorNames() const;

  // Dtype, shape and location of `name`. NotFound naming the tensor and the checkpoint.
  absl::StatusOr<TensorInfo> Info(absl::string_view name);

  absl::StatusOr<Matrix> ReadMatrix(absl::string_view name, int64_t rows, int64_t cols);
  absl::StatusOr<std::vector<float>> ReadVector(absl::string_view name, int64_t size);

  // The mapped file holding `name` (for callers that keep weights in their stored dtype).
  absl::StatusOr<const SafetensorsFile*> FileFor(absl::string_view name);

 private:
  Checkpoint(std::string dir, std::map<std::string, std::string> weight_map);

  std::string dir_;
  // Tensor name → file name inside dir_. For a single-file checkpoint, every tensor maps to
  // "model.safetensors".
  std::map<std::string, std::string> weight_map_;
  std::map<std::string, std::unique_ptr<SafetensorsFile>> open_files_;
};

}  // namespace moe

#endif  // MOE_COMMON_CHECKPOINT_CHECKPOINT_H_
