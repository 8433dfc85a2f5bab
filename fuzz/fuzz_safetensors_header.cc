// Fuzzes SafetensorsFile::Open on arbitrary file bytes (8-byte length, JSON header, data), then
// reads every tensor it accepted: Open's validation must make every later read in bounds.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/checkpoint/safetensors_file.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = moe::fuzz::ScratchDir("safetensors") + "/model.safetensors";
  moe::fuzz::WriteFile(path, data, size);
  auto file = moe::SafetensorsFile::Open(path);
  if (!file.ok()) return 0;
  for (const auto& [name, info] : (*file)->tensors()) {
    moe::fuzz::Check(info.begin <= info.end && info.end <= size, "accepted range past the file");
    auto values = (*file)->ReadF32(name);
    moe::fuzz::Check(values.ok() && static_cast<int64_t>(values->size()) == info.num_elements(),
                     "ReadF32 of an accepted tensor failed or has the wrong size: " + name);
  }
  return 0;
}
