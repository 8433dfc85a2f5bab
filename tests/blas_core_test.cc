// The real binaries pick OpenBLAS's best kernels at start (common/kernels/blas_kernels.h,
// UseBestBlasKernels) and say which kernels run, in the startup log and in Info: on an AVX-512 CPU
// OpenBLAS runs AVX-512 kernels whatever the library picked alone (a CPU it does not know is
// stood in for by MOE_TEST_OPENBLAS_PICKED: the binaries re-execute themselves with
// OPENBLAS_CORETYPE=SkylakeX), and a user's OPENBLAS_CORETYPE is kept as given.
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "common/kernels/bf16_dot_kernel.h"
#include "common/kernels/row_dot_kernel.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/cluster.h"
#include "testing/test_models.h"

namespace moe {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;

bool CpuRunsAvx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vl");
}

// Restores OPENBLAS_CORETYPE (and the variable UseBestBlasKernels sets) when a test ends; the
// servers a test starts inherit this process's environment.
class BlasCoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name :
         {"OPENBLAS_CORETYPE", "MOE_OPENBLAS_DETECTED", "MOE_TEST_OPENBLAS_PICKED"}) {
      if (const char* value = std::getenv(name)) saved_.emplace_back(name, value);
      unsetenv(name);
    }
  }
  void TearDown() override {
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv("MOE_TEST_OPENBLAS_PICKED");
    for (const auto& [name, value] : saved_) setenv(name.c_str(), value.c_str(), 1);
  }
  std::vector<std::pair<std::string, std::string>> saved_;
};

constexpr char kAvx512Cores[] = "(SkylakeX|Cooperlake|SapphireRapids)";
// What KernelsReport adds on a CPU with AVX512-VNNI, AVX512-BF16 or AMX, or AVX2 alone.
std::string CpuNote() {
  std::vector<std::string> notes;
  if (Avx512VnniRowDotKernels() != nullptr) {
    notes.push_back(AmxBf16StagedDotKernels() != nullptr ? "int8 dots: avx512vnni + amx-bf16-staged"
                                                         : "int8 dots: avx512vnni");
  } else if (Avx512RowDotKernels() == nullptr && Avx2Int16RowDotKernels() != nullptr) {
    notes.push_back("int8 dots: avx2-int16");
  }
  if (AmxBf16DotKernels() != nullptr) {
    notes.push_back("bf16 activations: amx-bf16 + amx-bf16-staged");
  } else if (Avx512Bf16DotKernels() != nullptr) {
    notes.push_back(Avx512Bf16DotsPayOff(ThisCpu())
                        ? "bf16 activations: avx512bf16"
                        : "bf16 weights widened: avx512bf16 is slower than float32 here");
  }
  return notes.empty() ? "" : " (" + absl::StrJoin(notes, "; ") + ")";
}
const std::string kCpuNote = CpuNote();

TEST_F(BlasCoreTest, ServersRunAvx512BlasKernelsOnAnAvx512Cpu) {
  if (!CpuRunsAvx512()) GTEST_SKIP() << "this CPU has no AVX-512";
  const std::string model = testing::WriteTestModel("tiny");
  testing::Cluster cluster(model, 0, {"0-7"});
  const std::string expert_kernels = cluster.ExpertInfo(0).kernels();
  const std::string router_kernels = cluster.Info().kernels();
  for (const std::string& kernels : {expert_kernels, router_kernels}) {
    EXPECT_THAT(kernels, MatchesRegex(std::string("OpenBLAS ") + kAvx512Cores + ".*"));
    EXPECT_THAT(kernels, ::testing::EndsWith("; FFN kernels avx512" + kCpuNote));
  }
  EXPECT_THAT(cluster.expert(0).process->Log(), HasSubstr("kernels: " + expert_kernels));
  EXPECT_THAT(cluster.router_server().process->Log(), HasSubstr("kernels: " + router_kernels));
}

TEST_F(BlasCoreTest, ServersReExecuteWithAvx512KernelsWhenOpenBlasPicksWeakerOnes) {
  if (!CpuRunsAvx512()) GTEST_SKIP() << "this CPU has no AVX-512";
  setenv("MOE_TEST_OPENBLAS_PICKED", "Prescott", 1);  // as 0.3.21 does on Sapphire Rapids
  const std::string model = testing::WriteTestModel("tiny");
  testing::Cluster cluster(model, 0, {"0-7"});
  const std::string expected =
      "OpenBLAS SkylakeX (OPENBLAS_CORETYPE=SkylakeX; OpenBLAS alone picked Prescott); FFN "
      "kernels avx512" +
      kCpuNote;
  EXPECT_EQ(cluster.ExpertInfo(0).kernels(), expected);
  EXPECT_EQ(cluster.Info().kernels(), expected);
  EXPECT_THAT(cluster.expert(0).process->Log(), HasSubstr("kernels: " + expected));
}

bool CpuRunsAvx2Only() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && !CpuRunsAvx512();
}

TEST_F(BlasCoreTest, ServersRunTheAvx2KernelsOnAnAvx2CpuWithoutAvx512) {
  if (!CpuRunsAvx2Only()) GTEST_SKIP() << "this CPU has AVX-512, or no AVX2";
  const std::string model = testing::WriteTestModel("tiny");
  testing::Cluster cluster(model, 0, {"0-7"});
  for (const std::string& kernels : {cluster.ExpertInfo(0).kernels(), cluster.Info().kernels()}) {
    EXPECT_THAT(kernels, MatchesRegex("OpenBLAS (Haswell|Zen).*"));
    EXPECT_THAT(kernels, ::testing::EndsWith("; FFN kernels avx2" + kCpuNote));
  }
}

TEST_F(BlasCoreTest, ServersReExecuteWithAvx2KernelsWhenOpenBlasPicksWeakerOnes) {
  if (!CpuRunsAvx2Only()) GTEST_SKIP() << "this CPU has AVX-512, or no AVX2";
  setenv("MOE_TEST_OPENBLAS_PICKED", "Prescott", 1);  // as on an AVX2 CPU OpenBLAS does not know
  const std::string model = testing::WriteTestModel("tiny");
  testing::Cluster cluster(model, 0, {"0-7"});
  const std::string expected =
      "OpenBLAS Haswell (OPENBLAS_CORETYPE=Haswell; OpenBLAS alone picked Prescott); FFN kernels "
      "avx2" +
      kCpuNote;
  EXPECT_EQ(cluster.ExpertInfo(0).kernels(), expected);
  EXPECT_EQ(cluster.Info().kernels(), expected);
  EXPECT_THAT(cluster.expert(0).process->Log(), HasSubstr("kernels: " + expected));
}

TEST_F(BlasCoreTest, AUsersCoreTypeIsKeptAndAWeakOneIsPointedOut) {
  setenv("OPENBLAS_CORETYPE", "Haswell", 1);
  const std::string model = testing::WriteTestModel("tiny");
  testing::Cluster cluster(model, 0, {"0-7"});
  const std::string expected =
      CpuRunsAvx512() ? "OpenBLAS Haswell (OPENBLAS_CORETYPE=Haswell; this CPU runs OpenBLAS's "
                        "AVX-512 kernels: unset it to use them)"
                      : "OpenBLAS Haswell (OPENBLAS_CORETYPE=Haswell)";
  EXPECT_THAT(cluster.ExpertInfo(0).kernels(), HasSubstr(expected));
  EXPECT_THAT(cluster.Info().kernels(), HasSubstr(expected));
}

TEST_F(BlasCoreTest, AUsersSse3CoreTypeOnAnAvx2CpuIsKeptAndPointedOut) {
  if (!CpuRunsAvx2Only()) GTEST_SKIP() << "this CPU has AVX-512, or no AVX2";
  setenv("OPENBLAS_CORETYPE", "Prescott", 1);
  const std::string model = testing::WriteTestModel("tiny");
  testing::Cluster cluster(model, 0, {"0-7"});
  const std::string expected =
      "OpenBLAS Prescott (OPENBLAS_CORETYPE=Prescott; this CPU runs OpenBLAS's AVX2 kernels: "
      "unset it to use them)";
  EXPECT_THAT(cluster.ExpertInfo(0).kernels(), HasSubstr(expected));
  EXPECT_THAT(cluster.Info().kernels(), HasSubstr(expected));
}

}  // namespace
}  // namespace moe
