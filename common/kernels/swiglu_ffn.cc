#include "common/kernels/swiglu_ffn.h"

#include <algorithm>
#include <cstdlib>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "common/kernels/bf16_dot_kernel.h"
#include "common/kernels/blas_kernels.h"
#include "common/kernels/row_dot_kernel.h"
#include "common/kernels/swiglu_paths.h"
#include "common/status/status_macros.h"

namespace moe {

int64_t SwigluInputStride(int64_t d_model) { return (d_model + 15) / 16 * 16 + 16; }

int64_t SwigluBlasMinTokens(WeightStorage storage, bool allow_avx512, bool allow_avx2) {
  const RowDotKernels* kernels = &BestRowDotKernels(allow_avx512, false, allow_avx2);
  const SwigluSwitchPoint& point = kernels == &PortableRowDotKernels() ? kSwitchPortable
                                   : kernels == Avx2RowDotKernels(kernels->one_token_streams)
                                       ? kSwitchAvx2
                                   : BlasHasAvx512Kernels() ? kSwitchAvx512VsAvx512Blas
                                                            : kSwitchAvx512VsAvx2Blas;
  return storage == WeightStorage::kF32    ? point.f32
         : storage == WeightStorage::kBF16 ? point.bf16
                                           : point.int8;
}

int64_t SwigluBf16DotMinTokens() {
  const Bf16DotKernels* dot = BestBf16DotKernels(/*allow_amx=*/true, /*tokens=*/0);
  return dot == nullptr ? 0 : dot->min_tokens;
}

absl::StatusOr<SwigluKernelCap> ParseSwigluKernelCap(absl::string_view value) {
  if (value == "auto" || value.empty()) return SwigluKernelCap::kAuto;
  if (value == "avx512bf16") return SwigluKernelCap::kAvx512Bf16;
  if (value == "avx512") return SwigluKernelCap::kAvx512;
  if (value == "avx2") return SwigluKernelCap::kAvx2;
  if (value == "portable") return SwigluKernelCap::kPortable;
  return absl::InvalidArgumentError(absl::StrCat("kernel cap \"", value,
                                                 "\" is not one of: auto, avx512bf16, avx512, "
                                                 "avx2, portable"));
}

absl::StatusOr<SwigluKernelCap> SwigluKernelCapFromEnv() {
  static const absl::StatusOr<SwigluKernelCap> cap = []() -> absl::StatusOr<SwigluKernelCap> {
    const char* env = std::getenv("MOE_KERNELS");
    absl::StatusOr<SwigluKernelCap> parsed = ParseSwigluKernelCap(env == nullptr ? "" : env);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("MOE_KERNELS: ", parsed.status().message()));
    }
    return parsed;
  }();
  return cap;
}

absl::StatusOr<std::string> SwigluKernelSummary(WeightStorage storage) {
  ASSIGN_OR_RETURN(const SwigluKernelCap cap, SwigluKernelCapFromEnv());
  RETURN_IF_ERROR(OneTokenStreamsFromEnv().status());
  const bool allow_avx512 = cap < SwigluKernelCap::kAvx2;
  const bool allow_avx2 = cap < SwigluKernelCap::kPortable;
  // The int16 dots serve int8 weights only; AVX512-VNNI's capped like AVX512-BF16 by
  // MOE_KERNELS=avx512 (the AVX2 ones are what an AVX2 CPU runs: kept by MOE_KERNELS=avx2).
  const bool int16_dots = storage == WeightStorage::kInt8 && cap != SwigluKernelCap::kAvx512;
  const RowDotKernels& streaming = BestRowDotKernels(allow_avx512, int16_dots, allow_avx2);
  std::string summary = absl::StrCat(streaming.name, " streaming");
  if (streaming.one_token_streams > 1) {
    absl::StrAppend(&summary, " (one token: ", streaming.one_token_streams,
                    " weight streams per thread)");
  }
  const int64_t blas_from = SwigluBlasMinTokens(storage, allow_avx512, allow_avx2);
  const Bf16DotKernels* dot =
      cap < SwigluKernelCap::kAvx512
          ? BestBf16DotKernels(/*allow_amx=*/cap != SwigluKernelCap::kAvx512Bf16, /*tokens=*/0)
          : nullptr;
  if (storage == WeightStorage::kBF16 && dot != nullptr) {
    absl::StrAppend(&summary, "; ", dot->name, " (bf16 activations) from ", dot->min_tokens,
                    " tokens per call");
    if (dot == AmxBf16DotKernels()) {
      absl::StrAppend(&summary, ", ", AmxBf16StagedDotKernels()->name, " from ",
                      AmxBf16StagedDotKernels()->min_tokens);
    }
  } else if (const Bf16DotKernels* staged =
                 int16_dots && cap == SwigluKernelCap::kAuto ? AmxBf16StagedDotKernels() : nullptr;
             staged != nullptr && staged->dots_int8 != nullptr &&
             streaming.dots_int8_quantized != nullptr) {
    absl::StrAppend(&summary, "; ", staged->name, " (int8 weights, bf16 activations) from ",
                    staged->int8_min_tokens, " tokens per call, never OpenBLAS");
  } else if (blas_from != kSwigluNeverBlas) {
    absl::StrAppend(&summary, "; OpenBLAS (", BlasCoreName(), ") from ", blas_from,
                    " tokens per call");
  }
  if (storage == WeightStorage::kBF16 && dot == nullptr && cap < SwigluKernelCap::kAvx512 &&
      Avx512Bf16DotKernels() != nullptr) {
    absl::StrAppend(&summary, "; ", Avx512Bf16DotKernels()->name,
                    " not taken (its dots are slower than float32 on this CPU)");
  }
  if (cap != SwigluKernelCap::kAuto) absl::StrAppend(&summary, " (capped by MOE_KERNELS)");
  return summary;
}

namespace {

// What SwigluForward runs for a call of `tokens` tokens.
struct SwigluChoice {
  SwigluPath path;
  const RowDotKernels* kernels;  // the streaming kernels (also SiLU⊙ on the other paths)
  const Bf16DotKernels* dot;     // set on kBf16Dot
};

absl::StatusOr<SwigluChoice> ChooseSwiglu(const SwigluWeights& weights, int64_t tokens,
                                          const SwigluOptions& options) {
  ASSIGN_OR_RETURN(const SwigluKernelCap cap, SwigluKernelCapFromEnv());
  RETURN_IF_ERROR(OneTokenStreamsFromEnv().status());
  const bool allow_avx512 = options.allow_avx512 && cap < SwigluKernelCap::kAvx2;
  const bool allow_avx2 = options.allow_avx2 && cap < SwigluKernelCap::kPortable;
  const bool allow_bf16_dot =
      allow_avx512 && options.allow_avx512_bf16 && cap < SwigluKernelCap::kAvx512;
  const bool allow_int16_dots = options.allow_int16_dots && cap != SwigluKernelCap::kAvx512 &&
                                weights.storage() == WeightStorage::kInt8;
  if (options.one_token_streams != 0 &&
      std::find(std::begin(kOneTokenStreamChoices), std::end(kOneTokenStreamChoices),
                options.one_token_streams) == std::end(kOneTokenStreamChoices)) {
    return absl::InvalidArgumentError(
        absl::StrCat("one_token_streams is ", options.one_token_streams,
                     ": expected 1 or 4 weight streams per thread, or 0 for the process's"));
  }
  const RowDotKernels& kernels =
      BestRowDotKernels(allow_avx512, allow_int16_dots, allow_avx2, options.one_token_streams);
  const bool allow_amx = allow_bf16_dot && options.allow_amx && cap != SwigluKernelCap::kAvx512Bf16;
  // Int8 weights take the AMX tiles with the int16 dots they are built beside (the same caps).
  const bool allow_int8_amx = allow_int16_dots && allow_amx;
  const Bf16DotKernels* dot = !allow_bf16_dot             ? nullptr
                              : weights.bf16() != nullptr ? BestBf16DotKernels(allow_amx, tokens)
                              : weights.int8() != nullptr
                                  ? Int8Bf16DotKernels(allow_int8_amx, tokens)
                                  : nullptr;
  if (options.path == SwigluPath::kBf16Dot && dot == nullptr && allow_bf16_dot &&
      weights.bf16() != nullptr) {
    dot = Avx512Bf16DotKernels();  // forced: also where it does not pay off (Avx512Bf16DotsPayOff)
  }
  if (options.path == SwigluPath::kBf16Dot && dot == nullptr) {
    return absl::FailedPreconditionError(
        "the bf16-activation path needs BF16 weights and a CPU with AVX512-BF16, or int8 weights "
        "and AMX-BF16 from its switch point (and kernels not capped below it)");
  }
  SwigluPath path = options.path;
  if (path == SwigluPath::kAuto) {
    // (Int8Bf16DotKernels returned the tiles only from their int8_min_tokens on.)
    path = dot != nullptr && (weights.int8() != nullptr || tokens >= dot->min_tokens)
               ? SwigluPath::kBf16Dot
           : tokens < SwigluBlasMinTokens(weights.storage(), allow_avx512, allow_avx2)
               ? SwigluPath::kStreaming
               : SwigluPath::kBlas;
  }
  return SwigluChoice{path, &kernels, path == SwigluPath::kBf16Dot ? dot : nullptr};
}

}  // namespace

absl::StatusOr<SwigluPath> SwigluPathFor(const SwigluWeights& weights, int64_t tokens,
                                         const SwigluOptions& options) {
  ASSIGN_OR_RETURN(const SwigluChoice choice, ChooseSwiglu(weights, tokens, options));
  return choice.path;
}

absl::Status SwigluForward(const SwigluWeights& weights, ConstMatrixView x, MatrixView y,
                           const SwigluOptions& options) {
  const int64_t d = weights.d_model();
  if (x.cols != d || y.cols != d || y.rows != x.rows) {
    return absl::InvalidArgumentError(absl::StrCat("SwiGLU input [", x.rows, ",", x.cols,
                                                   "] / output [", y.rows, ",", y.cols,
                                                   "] do not match d_model ", d));
  }
  ASSIGN_OR_RETURN(const SwigluChoice choice, ChooseSwiglu(weights, x.rows, options));
  const SwigluPath path = choice.path;
  const RowDotKernels& kernels = *choice.kernels;
  const Bf16DotKernels* dot = choice.dot;
  SwigluReport report;
  report.path = path;
  report.kernels = path == SwigluPath::kBf16Dot ? dot->name : kernels.name;
  report.one_token_streams = kernels.one_token_streams;
  if (y.size() == 0 || weights.width() == 0) {
    for (int64_t t = 0; t < y.rows; ++t) std::fill(y.row(t), y.row(t) + y.cols, 0.0f);
  } else if (path == SwigluPath::kBf16Dot) {
    SwigluBf16Dot(weights, x, y, *dot, kernels, options.pool);
  } else if (path == SwigluPath::kStreaming) {
    SwigluStreaming(weights, x, y, kernels, options.pool, &report.copied_input);
  } else {
    RETURN_IF_ERROR(SwigluBlas(weights, x, y, kernels));
  }
  if (options.report != nullptr) *options.report = report;
  return absl::OkStatus();
}

}  // namespace moe
