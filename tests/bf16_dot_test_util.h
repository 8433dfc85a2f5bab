// Helpers shared by the tests of the bf16-activation kernels (bf16_dot_kernel_test.cc,
// swiglu_bf16_path_test.cc, swiglu_bf16_dispatch_test.cc): each kernel set by name, so that a test
// runs once per kernel and skips, saying so, a kernel this CPU has not got.
#ifndef MOE_TESTS_BF16_DOT_TEST_UTIL_H_
#define MOE_TESTS_BF16_DOT_TEST_UTIL_H_

#include <algorithm>
#include <string>
#include <vector>

#include "common/kernels/bf16_dot_kernel.h"

namespace moe {

// The kernels under test, by name; nullptr where this CPU has not got them. "avx512bf16" is the
// process's AVX512-BF16 set; "avx512bf16-one-stream" and "avx512bf16-parts" its two ways of
// reading calls of a few tokens (one quad at a time, or two parts side by side), whichever the
// process takes.
inline const Bf16DotKernels* KernelsNamed(const std::string& name) {
  if (name == "amx-bf16") return AmxBf16DotKernels();
  if (name == "amx-bf16-staged") return AmxBf16StagedDotKernels();
  if (name == "avx512bf16-one-stream") return Avx512Bf16DotKernels(/*one_token_streams=*/1);
  if (name == "avx512bf16-parts") return Avx512Bf16DotKernels(/*one_token_streams=*/4);
  return Avx512Bf16DotKernels();
}
// Every dots implementation once.
inline const std::vector<std::string> kKernelNames = {"avx512bf16-one-stream", "avx512bf16-parts",
                                                      "amx-bf16", "amx-bf16-staged"};

// For test names: "amx-bf16" → "amx_bf16".
inline std::string Identifier(std::string name) {
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

#define SKIP_WITHOUT(kernels, name) \
  if ((kernels) == nullptr) GTEST_SKIP() << "this CPU has no " << (name);

}  // namespace moe

#endif  // MOE_TESTS_BF16_DOT_TEST_UTIL_H_
