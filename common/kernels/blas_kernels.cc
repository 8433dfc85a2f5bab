#include "common/kernels/blas_kernels.h"

#include <cblas.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/kernels/bf16_dot_kernel.h"
#include "common/kernels/row_dot_kernel.h"

namespace moe {
namespace {

// Below this many rows of a (tokens), MatMulTransposed runs the row-dot kernels, which read b in
// place once per tile of tokens: OpenBLAS 0.3.21's sgemm first packs all of b on every call.
// Measured for a router's gate (b 128 × 2048, one thread) on a 2-core Zen 3: 1 token 107 µs with
// sgemm against 20 with the AVX2 dots, 8 tokens 118 against 81, 16 tokens equal (159 µs each).
constexpr int64_t kMinBlasRows = 16;

}  // namespace

absl::Status MatMulTransposed(ConstMatrixView a, ConstMatrixView b, MatrixView c, bool accumulate) {
  if (a.cols != b.cols || c.rows != a.rows || c.cols != b.rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        "MatMulTransposed shapes do not agree: a [", a.rows, ",", a.cols, "] b [", b.rows, ",",
        b.cols, "] c [", c.rows, ",", c.cols, "]; need a [M,K] b [N,K] c [M,N]"));
  }
  if (a.stride < a.cols || b.stride < b.cols || c.stride < c.cols) {
    return absl::InvalidArgumentError(absl::StrCat("MatMulTransposed row strides ", a.stride, ", ",
                                                   b.stride, ", ", c.stride,
                                                   " are shorter than the rows"));
  }
  if (c.size() == 0) return absl::OkStatus();
  if (a.cols == 0) {
    for (int64_t r = 0; !accumulate && r < c.rows; ++r)
      std::fill(c.row(r), c.row(r) + c.cols, 0.0f);
    return absl::OkStatus();
  }
  if (!accumulate && a.rows < kMinBlasRows) {
    BestRowDotKernels().dots_f32(b.data, b.stride, b.rows, a.cols, a.data, a.stride, a.rows, c.data,
                                 c.stride);
    return absl::OkStatus();
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(a.rows),
              static_cast<blasint>(b.rows), static_cast<blasint>(a.cols), 1.0f, a.data,
              static_cast<blasint>(a.stride), b.data, static_cast<blasint>(b.stride),
              accumulate ? 1.0f : 0.0f, c.data, static_cast<blasint>(c.stride));
  return absl::OkStatus();
}

std::string BlasCoreName() { return openblas_get_corename(); }

namespace {

constexpr char kCoreTypeVariable[] = "OPENBLAS_CORETYPE";
constexpr char kDetectedVariable[] = "MOE_OPENBLAS_DETECTED";
constexpr char kAssumedVariable[] = "MOE_TEST_OPENBLAS_PICKED";
constexpr char kAvx512Core[] = "SkylakeX";
constexpr char kAvx2Core[] = "Haswell";

bool IsAvx512Core(const std::string& name) {
  const std::string core = absl::AsciiStrToLower(name);
  return core == "skylakex" || core == "cooperlake" || core == "sapphirerapids";
}

// OpenBLAS's x86-64 cores with AVX2 + FMA sgemm kernels (Zen's are Haswell's).
bool IsAvx2OrBetterCore(const std::string& name) {
  const std::string core = absl::AsciiStrToLower(name);
  return IsAvx512Core(name) || core == "haswell" || core == "zen";
}

bool CpuRunsAvx512() {
  __builtin_cpu_init();
  // libgcc also checks that the OS saves the zmm state (XCR0).
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vl");
}

bool CpuRunsAvx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

// The OpenBLAS core this CPU should run when OpenBLAS picked `picked`; nullptr when `picked` is
// already as good.
const char* BetterCore(const std::string& picked) {
  if (CpuRunsAvx512()) return IsAvx512Core(picked) ? nullptr : kAvx512Core;
  if (CpuRunsAvx2()) return IsAvx2OrBetterCore(picked) ? nullptr : kAvx2Core;
  return nullptr;
}

}  // namespace

bool BlasHasAvx512Kernels() {
  static const bool avx512 = IsAvx512Core(BlasCoreName());
  return avx512;
}

void UseBestBlasKernels(char** argv) {
  if (std::getenv(kCoreTypeVariable) != nullptr) return;
  // Test seam: what OpenBLAS would have picked on a CPU it does not know.
  const char* assumed = std::getenv(kAssumedVariable);
  const std::string picked = assumed != nullptr ? assumed : BlasCoreName();
  const char* better = BetterCore(picked);
  if (better == nullptr) return;
  if (setenv(kCoreTypeVariable, better, 1) != 0 ||
      setenv(kDetectedVariable, picked.c_str(), 1) != 0) {
    return;
  }
  execv("/proc/self/exe", argv);
  // Only reached when the exec failed: go on as loaded.
  const int error = errno;
  unsetenv(kCoreTypeVariable);
  unsetenv(kDetectedVariable);
  std::cerr << argv[0] << ": OpenBLAS runs its " << picked << " kernels on this "
            << (CpuRunsAvx512() ? "AVX-512" : "AVX2") << " CPU; re-executing with "
            << kCoreTypeVariable << "=" << better << " failed: " << std::strerror(error)
            << std::endl;
}

std::string BlasKernelsReport() {
  std::string report = BlasCoreName();
  const char* forced = std::getenv(kCoreTypeVariable);
  if (forced == nullptr) return report;
  absl::StrAppend(&report, " (", kCoreTypeVariable, "=", forced);
  if (const char* detected = std::getenv(kDetectedVariable); detected != nullptr) {
    absl::StrAppend(&report, "; OpenBLAS alone picked ", detected);
  } else if (BetterCore(BlasCoreName()) != nullptr) {
    absl::StrAppend(&report, "; this CPU runs OpenBLAS's ", CpuRunsAvx512() ? "AVX-512" : "AVX2",
                    " kernels: unset it to use them");
  }
  return report + ")";
}

std::string KernelsReport() {
  std::vector<std::string> extras;
  if (const RowDotKernels& int8 = BestRowDotKernels(true, /*allow_int16_dots=*/true);
      int8.quantize_activations != nullptr) {
    extras.push_back(absl::StrCat("int8 dots: ", int8.name));
    if (const Bf16DotKernels* staged = AmxBf16StagedDotKernels();
        staged != nullptr && staged->dots_int8 != nullptr) {
      absl::StrAppend(&extras.back(), " + ", staged->name);
    }
  }
  if (AmxBf16DotKernels() != nullptr) {
    extras.push_back(absl::StrCat("bf16 activations: ", AmxBf16DotKernels()->name, " + ",
                                  AmxBf16StagedDotKernels()->name));
  } else if (DefaultAvx512Bf16DotKernels() != nullptr) {
    extras.push_back(absl::StrCat("bf16 activations: ", DefaultAvx512Bf16DotKernels()->name));
  } else if (Avx512Bf16DotKernels() != nullptr) {
    extras.push_back(absl::StrCat("bf16 weights widened: ", Avx512Bf16DotKernels()->name,
                                  " is slower than float32 here"));
  }
  std::string report =
      absl::StrCat("OpenBLAS ", BlasKernelsReport(), "; FFN kernels ", BestRowDotKernels().name);
  if (!extras.empty()) absl::StrAppend(&report, " (", absl::StrJoin(extras, "; "), ")");
  return report;
}

void SetBlasThreads(int threads) { openblas_set_num_threads(threads < 1 ? 1 : threads); }

}  // namespace moe
