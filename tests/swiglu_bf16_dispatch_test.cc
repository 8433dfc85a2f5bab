// Which path and kernels SwigluForward runs for BF16 weights: the bf16-activation path from its
// kernels' switch point (AMX where the CPU has it, else AVX512-BF16), the fall-backs when AMX or
// AVX512-BF16 is forced off per call or capped by MOE_KERNELS, and the cap's parsing.
#include <cstdlib>
#include <random>
#include <string>

#include "common/kernels/bf16_dot_kernel.h"
#include "common/kernels/row_dot_kernel.h"
#include "common/kernels/swiglu_ffn.h"
#include "gtest/gtest.h"
#include "tests/bf16_dot_test_util.h"
#include "tests/swiglu_test_util.h"

namespace moe {
namespace {

SwigluReport Forward(const SwigluWeights& w, int64_t tokens, SwigluOptions options,
                     Matrix* y_out = nullptr) {
  std::mt19937 rng(static_cast<unsigned>(tokens));
  const Matrix x = RandomMatrix(tokens, w.d_model(), 1.0f, rng);
  Matrix y(tokens, w.d_model());
  SwigluReport report;
  options.report = &report;
  const absl::Status status = SwigluForward(w, x, y.view(), options);
  EXPECT_TRUE(status.ok()) << status;
  if (y_out != nullptr) {
    ExpectMatches(y, ReferenceSwiglu(Widened(w), x), "float32 path");
    *y_out = std::move(y);
  }
  return report;
}

// The best bf16-activation kernels this CPU takes by itself for a call of `tokens`: "amx-bf16"
// (up to 16 tokens) or "amx-bf16-staged", "avx512bf16" where it pays off, or "" (neither).
std::string BestBf16Kernels(int64_t tokens) {
  if (AmxBf16DotKernels() != nullptr) return tokens <= 16 ? "amx-bf16" : "amx-bf16-staged";
  return DefaultAvx512Bf16DotKernels() != nullptr ? "avx512bf16" : "";
}

TEST(SwigluBf16DispatchTest, Bf16WeightsTakeTheBf16PathFromTheSwitchPoint) {
  if (SwigluBf16DotMinTokens() == 0) {
    GTEST_SKIP() << "this CPU takes no bf16-activation kernels by itself";
  }
  std::mt19937 rng(3);
  const SwigluWeights w = RandomWeights(48, 64, rng, WeightStorage::kBF16);
  const int64_t s = SwigluBf16DotMinTokens();
  EXPECT_EQ(Forward(w, s - 1, {}).path, SwigluPath::kStreaming);
  const SwigluReport at = Forward(w, s, {});
  EXPECT_EQ(at.path, SwigluPath::kBf16Dot);
  EXPECT_EQ(at.kernels, BestBf16Kernels(s));
  EXPECT_EQ(Forward(w, 257, {}).path, SwigluPath::kBf16Dot);
}

// With AMX, a call of up to 16 tokens reads the weights in place, a larger one stages them.
TEST(SwigluBf16DispatchTest, AmxCallsOfMoreThan16TokensTakeTheStagedKernels) {
  SKIP_WITHOUT(AmxBf16DotKernels(), "amx-bf16");
  std::mt19937 rng(9);
  const SwigluWeights w = RandomWeights(48, 64, rng, WeightStorage::kBF16);
  EXPECT_STREQ(Forward(w, 16, {}).kernels, "amx-bf16");
  EXPECT_STREQ(Forward(w, 17, {}).kernels, "amx-bf16-staged");
  EXPECT_STREQ(Forward(w, 257, {}).kernels, "amx-bf16-staged");
  const absl::StatusOr<std::string> summary = SwigluKernelSummary(WeightStorage::kBF16);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_NE(summary->find("amx-bf16 (bf16 activations) from 2 tokens per call, amx-bf16-staged "
                          "from 17"),
            std::string::npos)
      << *summary;
}

// On a CPU with AMX this forces the fall-back; elsewhere it is what runs anyway.
TEST(SwigluBf16DispatchTest, WithoutAmxTheAvx512Bf16KernelsRunWhereTheyPayOff) {
  SKIP_WITHOUT(Avx512Bf16DotKernels(), "avx512bf16");
  if (!Avx512Bf16DotsPayOff(ThisCpu())) GTEST_SKIP() << "this CPU's AVX512-BF16 dots do not pay";
  std::mt19937 rng(8);
  const SwigluWeights w = RandomWeights(48, 64, rng, WeightStorage::kBF16);
  SwigluOptions no_amx;
  no_amx.allow_amx = false;
  const SwigluReport report = Forward(w, 64, no_amx);
  EXPECT_EQ(report.path, SwigluPath::kBf16Dot);
  EXPECT_STREQ(report.kernels, "avx512bf16");
}

// AMD's cores retire vdpbf16ps at the FMA rate, Intel's at a quarter of it (bf16_dot_kernel.h).
TEST(SwigluBf16DispatchTest, Avx512Bf16DotsPayOffOnAmdOnly) {
  auto cpu = [](bool amd, unsigned family, unsigned model) {
    CpuIdentity identity;
    identity.amd = amd;
    identity.family = family;
    identity.model = model;
    identity.avx512f = true;
    return identity;
  };
  EXPECT_TRUE(Avx512Bf16DotsPayOff(cpu(true, 25, 0x11)));  // Zen 4
  EXPECT_TRUE(Avx512Bf16DotsPayOff(cpu(true, 26, 0x02)));  // Zen 5
  EXPECT_FALSE(Avx512Bf16DotsPayOff(cpu(false, 6, 207)));  // Emerald Rapids
  EXPECT_FALSE(Avx512Bf16DotsPayOff(cpu(false, 6, 85)));   // Cooper Lake
}

// Where AVX512-BF16's dots do not pay off and there is no AMX (or it is forced off), BF16 weights
// take the float32 kernels at every token count, exact to float32, and the summary says why; a
// forced bf16-activation path still runs them.
TEST(SwigluBf16DispatchTest, WhereAvx512Bf16DoesNotPayOffBf16WeightsTakeTheFloat32Kernels) {
  SKIP_WITHOUT(Avx512Bf16DotKernels(), "avx512bf16");
  if (Avx512Bf16DotsPayOff(ThisCpu())) GTEST_SKIP() << "this CPU's AVX512-BF16 dots pay off";
  std::mt19937 rng(10);
  const SwigluWeights w = RandomWeights(48, 64, rng, WeightStorage::kBF16);
  SwigluOptions no_amx;
  no_amx.allow_amx = false;
  Matrix y;
  for (int64_t tokens : {1, 4, 16, 64, 257}) {
    const SwigluReport report = Forward(w, tokens, no_amx, &y);  // within float32's 1e-5
    EXPECT_NE(report.path, SwigluPath::kBf16Dot) << tokens << " tokens";
    EXPECT_STREQ(report.kernels, BestRowDotKernels().name) << tokens << " tokens";
  }
  if (AmxBf16DotKernels() == nullptr) {
    EXPECT_EQ(SwigluBf16DotMinTokens(), 0);
    const absl::StatusOr<std::string> summary = SwigluKernelSummary(WeightStorage::kBF16);
    ASSERT_TRUE(summary.ok()) << summary.status();
    EXPECT_NE(summary->find("avx512bf16 not taken (its dots are slower than float32 on this CPU)"),
              std::string::npos)
        << *summary;
  }
  SwigluOptions forced = no_amx;
  forced.path = SwigluPath::kBf16Dot;
  const SwigluReport report = Forward(w, 64, forced);
  EXPECT_EQ(report.path, SwigluPath::kBf16Dot);
  EXPECT_STREQ(report.kernels, "avx512bf16");
}

TEST(SwigluBf16DispatchTest, FallsBackToTheFloat32KernelsWhenForcedOff) {
  std::mt19937 rng(4);
  const SwigluWeights w = RandomWeights(48, 64, rng, WeightStorage::kBF16);
  Matrix y;
  SwigluOptions no_bf16;
  no_bf16.allow_avx512_bf16 = false;
  const SwigluReport avx512 = Forward(w, 64, no_bf16, &y);  // within the float32 paths' 1e-5
  EXPECT_NE(avx512.path, SwigluPath::kBf16Dot);
  EXPECT_STREQ(avx512.kernels, BestRowDotKernels().name);

  SwigluOptions no_avx512;
  no_avx512.allow_avx512 = false;  // no AVX-512 at all: no AVX512-BF16 either
  const SwigluReport avx2 = Forward(w, 64, no_avx512, &y);
  EXPECT_NE(avx2.path, SwigluPath::kBf16Dot);
  EXPECT_STREQ(avx2.kernels, Avx2RowDotKernels() != nullptr ? "avx2" : "portable");

  SwigluOptions portable = no_avx512;
  portable.allow_avx2 = false;
  const SwigluReport report = Forward(w, 64, portable, &y);
  EXPECT_NE(report.path, SwigluPath::kBf16Dot);
  EXPECT_STREQ(report.kernels, "portable");
}

TEST(SwigluBf16DispatchTest, Float32WeightsNeverTakeTheBf16Path) {
  std::mt19937 rng(5);
  const SwigluWeights w = RandomWeights(48, 64, rng, WeightStorage::kF32);
  Matrix y;
  EXPECT_NE(Forward(w, 257, {}, &y).path, SwigluPath::kBf16Dot);
  const absl::StatusOr<std::string> summary = SwigluKernelSummary(WeightStorage::kF32);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->find("bf16"), std::string::npos) << *summary;
}

TEST(SwigluBf16DispatchTest, ForcingTheBf16PathWhereItCannotRunFails) {
  std::mt19937 rng(6);
  const SwigluWeights f32 = RandomWeights(16, 8, rng, WeightStorage::kF32);
  const SwigluWeights bf16 = RandomWeights(16, 8, rng, WeightStorage::kBF16);
  const Matrix x = RandomMatrix(20, 16, 1.0f, rng);
  Matrix y(20, 16);
  SwigluOptions options;
  options.path = SwigluPath::kBf16Dot;
  EXPECT_EQ(SwigluForward(f32, x, y.view(), options).code(), absl::StatusCode::kFailedPrecondition);
  options.allow_avx512_bf16 = false;
  EXPECT_EQ(SwigluForward(bf16, x, y.view(), options).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(SwigluKernelCapTest, ParsesEveryLevelAndNamesTheAcceptedValuesOtherwise) {
  EXPECT_EQ(*ParseSwigluKernelCap("auto"), SwigluKernelCap::kAuto);
  EXPECT_EQ(*ParseSwigluKernelCap(""), SwigluKernelCap::kAuto);
  EXPECT_EQ(*ParseSwigluKernelCap("avx512bf16"), SwigluKernelCap::kAvx512Bf16);
  EXPECT_EQ(*ParseSwigluKernelCap("avx512"), SwigluKernelCap::kAvx512);
  EXPECT_EQ(*ParseSwigluKernelCap("avx2"), SwigluKernelCap::kAvx2);
  EXPECT_EQ(*ParseSwigluKernelCap("portable"), SwigluKernelCap::kPortable);
  const absl::Status bad = ParseSwigluKernelCap("avx1024").status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("auto, avx512bf16, avx512, avx2, portable"), std::string::npos)
      << bad;
}

// Run as is (MOE_KERNELS unset) and by ctest with MOE_KERNELS=avx512bf16, =avx512, =avx2,
// =portable and =avx1024 (not a level: every call fails naming the accepted values),
// tests/CMakeLists.txt.
TEST(SwigluKernelCapTest, TheEnvironmentCapAppliesToEveryCall) {
  const char* env = std::getenv("MOE_KERNELS");
  const absl::StatusOr<SwigluKernelCap> cap = ParseSwigluKernelCap(env == nullptr ? "" : env);
  std::mt19937 rng(7);
  const SwigluWeights w = RandomWeights(48, 64, rng, WeightStorage::kBF16);
  const Matrix x = RandomMatrix(257, 48, 1.0f, rng);
  Matrix y(257, 48);
  SwigluReport report;
  SwigluOptions options;
  options.report = &report;
  const absl::Status status = SwigluForward(w, x, y.view(), options);
  if (!cap.ok()) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(status.message().find("MOE_KERNELS"), std::string::npos) << status;
    EXPECT_EQ(SwigluKernelSummary(WeightStorage::kBF16).status().code(),
              absl::StatusCode::kInvalidArgument);
    return;
  }
  ASSERT_TRUE(status.ok()) << status;
  const absl::StatusOr<std::string> summary = SwigluKernelSummary(WeightStorage::kBF16);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->find("(bf16 activations)") != std::string::npos,
            report.path == SwigluPath::kBf16Dot)
      << *summary;
  EXPECT_EQ(summary->find("MOE_KERNELS") != std::string::npos, *cap != SwigluKernelCap::kAuto)
      << *summary;
  switch (*cap) {
    case SwigluKernelCap::kAuto:
      EXPECT_EQ(report.path == SwigluPath::kBf16Dot, !BestBf16Kernels(x.rows()).empty());
      if (report.path == SwigluPath::kBf16Dot) {
        EXPECT_EQ(report.kernels, BestBf16Kernels(x.rows()));
      }
      break;
    case SwigluKernelCap::kAvx512Bf16:
      EXPECT_EQ(report.path == SwigluPath::kBf16Dot, DefaultAvx512Bf16DotKernels() != nullptr);
      if (report.path == SwigluPath::kBf16Dot) {
        EXPECT_STREQ(report.kernels, "avx512bf16");
      }
      EXPECT_EQ(summary->find("amx"), std::string::npos) << *summary;
      break;
    case SwigluKernelCap::kAvx512:
      EXPECT_NE(report.path, SwigluPath::kBf16Dot);
      EXPECT_STREQ(report.kernels, BestRowDotKernels().name);
      ExpectMatches(y, ReferenceSwiglu(Widened(w), x), "MOE_KERNELS=avx512");
      break;
    case SwigluKernelCap::kAvx2:
      EXPECT_NE(report.path, SwigluPath::kBf16Dot);
      EXPECT_STREQ(report.kernels, Avx2RowDotKernels() != nullptr ? "avx2" : "portable");
      EXPECT_EQ(summary->find("avx512"), std::string::npos) << *summary;
      ExpectMatches(y, ReferenceSwiglu(Widened(w), x), "MOE_KERNELS=avx2");
      break;
    case SwigluKernelCap::kPortable:
      EXPECT_STREQ(report.kernels, "portable");
      ExpectMatches(y, ReferenceSwiglu(Widened(w), x), "MOE_KERNELS=portable");
      break;
  }
}

}  // namespace
}  // namespace moe
