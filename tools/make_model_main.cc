// moe_make_model: writes a deterministic synthetic checkpoint in the Hugging Face layout.
//
//   moe_make_model --preset=NAME --out=DIR [--seed=S] [--dtype=f32|bf16|f16] [--files=N]
#include <filesystem>
#include <iostream>
#include <optional>
#include <regex>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "common/cli/parse_flags.h"
#include "testing/synthetic_model.h"

ABSL_FLAG(std::string, preset, "tiny", "Model preset; --list_presets shows them");
ABSL_FLAG(std::string, out, "",
          "Required (unless --list_presets): directory to write config.json and the safetensors "
          "into; a checkpoint already there (config.json, model*.safetensors, the index) is "
          "replaced");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the weights");
ABSL_FLAG(std::string, dtype, "",
          "Stored dtype of the weights: f32, bf16 or f16; default: the preset's (bf16 for the "
          "real-shape *-layer presets, f32 otherwise)");
ABSL_FLAG(int, files, 1, "Number of safetensors files (>1 writes an index, as large HF models)");
ABSL_FLAG(bool, list_presets, false, "List the presets and exit");

namespace {

// Removes the files of a checkpoint written earlier into `dir` (config.json, model.safetensors,
// model-NNNNN-of-NNNNN.safetensors, model.safetensors.index.json): a stale index left next to a
// new single file would name tensors that are no longer there. Returns how many were removed.
int RemoveOldCheckpoint(const std::string& dir, std::string* error) {
  static const std::regex owned(
      R"(config\.json|model\.safetensors|model\.safetensors\.index\.json|)"
      R"(model-[0-9]+-of-[0-9]+\.safetensors)");
  std::error_code code;
  std::filesystem::directory_iterator it(dir, code);
  if (code) return 0;  // no directory yet: nothing to clean
  int removed = 0;
  for (const auto& entry : it) {
    if (!entry.is_regular_file(code)) continue;
    if (!std::regex_match(entry.path().filename().string(), owned)) continue;
    if (!std::filesystem::remove(entry.path(), code)) {
      *error = "cannot remove " + entry.path().string() + ": " + code.message();
      return -1;
    }
    ++removed;
  }
  return removed;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Writes a synthetic MoE checkpoint in the Hugging Face layout.\n"
      "  moe_make_model --out=DIR [--preset=NAME] [--seed=S] [--dtype=f32|bf16|f16] [--files=N]\n"
      "  moe_make_model --list_presets");
  moe::ParseFlags(argc, argv);
  if (absl::GetFlag(FLAGS_list_presets)) {
    for (const moe::ModelPreset& preset : moe::ModelPresets()) {
      std::cout << preset.name << "\t" << preset.description << " (serve layer "
                << preset.default_layer << ")\n";
    }
    return 0;
  }
  const moe::ModelPreset* preset = moe::FindPreset(absl::GetFlag(FLAGS_preset));
  if (preset == nullptr) {
    std::cerr << "moe_make_model: unknown --preset=" << absl::GetFlag(FLAGS_preset)
              << "; --list_presets shows the presets" << std::endl;
    return 2;
  }
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) {
    std::cerr << "moe_make_model: --out=DIR is required" << std::endl;
    return 2;
  }
  moe::SyntheticModelOptions options;
  options.seed = absl::GetFlag(FLAGS_seed);
  options.num_shards = absl::GetFlag(FLAGS_files);
  const std::string dtype_flag = absl::GetFlag(FLAGS_dtype);
  auto dtype = dtype_flag.empty() ? std::optional<moe::DType>(preset->default_dtype)
                                  : moe::ParseDType(absl::AsciiStrToUpper(dtype_flag));
  if (!dtype.has_value()) {
    std::cerr << "moe_make_model: --dtype must be f32, bf16 or f16, got "
              << absl::GetFlag(FLAGS_dtype) << std::endl;
    return 2;
  }
  options.dtype = *dtype;
  std::string error;
  const int removed = RemoveOldCheckpoint(out, &error);
  if (removed < 0) {
    std::cerr << "moe_make_model: " << error << std::endl;
    return 1;
  }
  if (removed > 0) {
    std::cout << "removed " << removed << (removed == 1 ? " file" : " files")
              << " of an earlier checkpoint from " << out << std::endl;
  }
  absl::Status written = moe::WriteSyntheticModel(*preset, options, out);
  if (!written.ok()) {
    std::cerr << "moe_make_model: " << written.message() << std::endl;
    return 1;
  }
  std::cout << "wrote " << preset->name << " (" << preset->description << ") to " << out
            << "; serve layer " << preset->default_layer << std::endl;
  return 0;
}
