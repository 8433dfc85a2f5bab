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

// The kernels under test, by name; nullptr where this CPU has not got them.
inline const Bf16DotKernels* KernelsNamed(const std::string& name) {
  if (name == "amx-bf16") return AmxBf16DotKernels();
  return name == "amx-bf16-staged" ? AmxBf16StagedDotKernels() : Avx512Bf16DotKernels();
}
inline const std::vector<std::string> kKernelNames = {"avx512bf16", "amx-bf16", "amx-bf16-staged"};

// For test names: "amx-bf16" → "amx_bf16".
inline std::string Identifier(std::string name) {
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

#define SKIP_WITHOUT(kernels, name) \
  if ((kernels) == nullptr) GTEST_SKIP() << "this CPU has no " << (name);

}  // namespace moe

#endif  // MOE_TESTS_BF16_DOT_TEST_UTIL_H_
