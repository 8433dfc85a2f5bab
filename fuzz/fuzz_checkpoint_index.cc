// Fuzzes Checkpoint::Open on an arbitrary model.safetensors.index.json beside a valid
// safetensors file, then looks tensors up through the parsed weight map (which must never
// reach outside the checkpoint directory).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/checkpoint/checkpoint.h"
#include "fuzz/fuzz_util.h"
#include "testing/safetensors_writer.h"

namespace {

const std::string& CheckpointDir() {
  static const std::string* dir = [] {
    auto* d = new std::string(moe::fuzz::ScratchDir("index"));
    std::vector<moe::TensorToWrite> tensors(2);
    tensors[0] = {"a", moe::DType::kF32, {2, 2}, {1, 2, 3, 4}};
    tensors[1] = {"b", moe::DType::kBF16, {3}, {5, 6, 7}};
    moe::fuzz::Check(moe::WriteSafetensorsFile(*d + "/part.safetensors", tensors).ok(),
                     "cannot write the shard file");
    return d;
  }();
  return *dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& dir = CheckpointDir();
  moe::fuzz::WriteFile(dir + "/model.safetensors.index.json", data, size);
  auto checkpoint = moe::Checkpoint::Open(dir);
  if (!checkpoint.ok()) return 0;
  for (const char* name : {"a", "b", "c", ""}) {
    if (!(*checkpoint)->Contains(name)) continue;
    auto file = (*checkpoint)->FileFor(name);
    // Only the one shard file exists, so any lookup that succeeds must have found it.
    moe::fuzz::Check(!file.ok() || (*file)->path() == dir + "/part.safetensors",
                     "the index reached a file other than the shard");
    if (file.ok()) (void)(*checkpoint)->ReadVector(name, 3);
  }
  return 0;
}
