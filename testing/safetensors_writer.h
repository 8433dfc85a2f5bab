// Writes safetensors files and Hugging Face checkpoint directories (single file, or sharded with
// model.safetensors.index.json). Used by moe_make_model and by tests that build checkpoints.
// Output is deterministic: tensors are laid out in name order, the header is padded to 8 bytes.
// Files are streamed to disk in chunks (a temporary name, renamed when complete).
// RemoveCheckpointFiles clears what an earlier write left before a new one.
#ifndef MOE_TESTING_SAFETENSORS_WRITER_H_
#define MOE_TESTING_SAFETENSORS_WRITER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/tensor/dtype.h"

namespace moe {

struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;  // stored dtype; values are rounded to it on write
  std::vector<int64_t> shape;
  std::vector<float> values;  // product(shape) values, row-major
  // Instead of `values` (left empty): writes values [first, first + count) into `out`, called
  // chunk by chunk while the file is written, so a checkpoint of GBs never sits in memory.
  std::function<void(int64_t first, int64_t count, float* out)> generate = nullptr;
};

// Writes one .safetensors file at `path`.
absl::Status WriteSafetensorsFile(const std::string& path,
                                  const std::vector<TensorToWrite>& tensors);

// Writes the tensors of a checkpoint into `dir` (which must exist): one model.safetensors when
// num_shards == 1, else model-0000i-of-0000n.safetensors files plus model.safetensors.index.json.
// Tensors are spread over shards in name order, balanced by bytes; no shard is left empty.
absl::Status WriteCheckpointTensors(const std::string& dir,
                                    const std::vector<TensorToWrite>& tensors, int num_shards);
// InvalidArgument unless `tensors` tensors can be written as `num_shards` files (1, or 2 up to one
// file per tensor): what WriteCheckpointTensors checks first.
absl::Status CheckShardCount(size_t tensors, int num_shards);

// Whether `file_name` is one WriteCheckpointTensors or a config writer would leave in a checkpoint
// directory: config.json, model.safetensors, model.safetensors.index.json or
// model-NNNNN-of-NNNNN.safetensors.
bool IsCheckpointFileName(absl::string_view file_name);

// Removes the checkpoint files (IsCheckpointFileName) of an earlier write from `dir`, leaving
// every other file; returns how many it removed (0 if `dir` does not exist).
absl::StatusOr<int> RemoveCheckpointFiles(const std::string& dir);

}  // namespace moe

#endif  // MOE_TESTING_SAFETENSORS_WRITER_H_
