// moe_make_model: writes a deterministic synthetic checkpoint in the Hugging Face layout.
//
//   moe_make_model --preset=NAME --out=DIR [--seed=S] [--dtype=f32|bf16|f16] [--files=N]
#include <cstdint>
#include <iostream>
#include <optional>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "common/cli/flag_ranges.h"
#include "common/cli/parse_flags.h"
#include "testing/safetensors_writer.h"
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
  if (absl::Status ranges =
          moe::CheckFlagRanges({{"files", absl::GetFlag(FLAGS_files), 1, INT32_MAX}});
      !ranges.ok()) {
    std::cerr << "moe_make_model: " << ranges.message() << std::endl;
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
  // A stale index left next to a new single file would name tensors that are no longer there.
  // Removed only once the new checkpoint is known to be writable (e.g. --files fits the tensors).
  options.before_writing = [&out]() -> absl::Status {
    absl::StatusOr<int> removed = moe::RemoveCheckpointFiles(out);
    if (!removed.ok()) return removed.status();
    if (*removed > 0) {
      std::cout << "removed " << *removed << (*removed == 1 ? " file" : " files")
                << " of an earlier checkpoint from " << out << std::endl;
    }
    return absl::OkStatus();
  };
  absl::Status written = moe::WriteSyntheticModel(*preset, options, out);
  if (!written.ok()) {
    std::cerr << "moe_make_model: " << written.message() << std::endl;
    return 1;
  }
  std::cout << "wrote " << preset->name << " (" << preset->description << ") to " << out
            << "; serve layer " << preset->default_layer << std::endl;
  return 0;
}
