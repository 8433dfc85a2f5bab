// The bf16-activation FFN path (common/kernels/bf16_dot_kernel.h, SwigluBf16Dot), for each of its
// kernels (AVX512-BF16 and AMX-BF16; a kernel this CPU lacks is skipped, saying so): the dots
// against loops in double, SwigluForward on that path against the triple-loop reference in double
// (tests/swiglu_test_util.h) within an error bound derived below, and the dispatch: which path and
// kernels run, and the fall-backs when AMX or AVX512-BF16 is forced off or capped by MOE_KERNELS.
//
// Error bound of the path, element by element (u = 2^-9, the relative rounding error of a bf16
// round-to-nearest; e = 2^-24, float32's). Weights are bf16 already (the reference uses them
// exactly). x is rounded to bf16, so each product w·x gains a relative error ≤ u, and the float32
// sums of k exact bf16 products add ≤ (k + 2)·e of Σ|w·x|:
//   |Δg_j| ≤ (u + (d + 2)·e) · Σ_i |gate_ji · x_i|        (the same for up, Δu_j)
// silu's slope is at most 1.1 in magnitude, so silu(g)·u moves by ≤ 1.1·|Δg|·(|u| + |Δu|) +
// (|silu(g)| + 1.1·|Δg|)·|Δu|; its float32 evaluation adds a few e and the rounding of the
// activation to bf16 adds u of its magnitude:
//   |Δa_j| ≤ 1.1·|Δg_j|·(|u_j| + |Δu_j|) + (|silu(g_j)| + 1.1·|Δg_j|)·|Δu_j| + (u + 8e)·(|a_j| + …)
//   |Δy_o| ≤ Σ_j |down_oj| · |Δa_j| + (h + 2)·e · Σ_j |down_oj · a_j|
// The test asserts |y − ref| ≤ 1.25 × that bound (the 1.25 covers the second-order terms dropped
// above) for every element. That bound is a worst case (every rounding error of the same sign):
// the kernels still met it with u set 4× smaller. So that its slack cannot hide a bad kernel, the
// RMS error of a token ÷ the RMS of its reference is checked too: median over tokens ≤ 5e-3, every
// token ≤ 1e-2 (measured: median 2.3e-3 to 3.5e-3 ≈ 2^-8.5, worst 6.2e-3; README.md).
#include "common/kernels/bf16_dot_kernel.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/kernels/row_dot_kernel.h"
#include "common/kernels/swiglu_ffn.h"
#include "common/kernels/thread_pool.h"
#include "common/tensor/bf16_matrix.h"
#include "common/tensor/dtype.h"
#include "gtest/gtest.h"
#include "tests/swiglu_test_util.h"

namespace moe {
namespace {

constexpr double kU = 1.0 / 512;        // bf16 round to nearest: 2^-9
constexpr double kE = 1.0 / (1 << 24);  // float32: 2^-24
constexpr double kSiluSlope = 1.1;      // max |d/dg silu(g)| = 1.0998…
constexpr double kSecondOrderSlack = 1.25;

// The kernels under test, by name; nullptr where this CPU has not got them.
const Bf16DotKernels* KernelsNamed(const std::string& name) {
  return name == "amx-bf16" ? AmxBf16DotKernels() : Avx512Bf16DotKernels();
}
const std::vector<std::string> kKernelNames = {"avx512bf16", "amx-bf16"};

// For test names: "amx-bf16" → "amx_bf16".
std::string Identifier(std::string name) {
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

#define SKIP_WITHOUT(kernels, name) \
  if ((kernels) == nullptr) GTEST_SKIP() << "this CPU has no " << (name);

// Packs rows [0, x.rows) of x (k ≤ padded columns) into a zeroed packed block in two calls, split
// at column `split` so that packing from a column inside a 16-column chunk is exercised too.
std::vector<uint16_t> Packed(const Bf16DotKernels& kernels, const Matrix& x, int64_t padded,
                             int64_t split) {
  std::vector<uint16_t> packed(kernels.packed_values(x.rows(), padded), 0);
  const int64_t k = x.cols(), first = std::min(split, k);
  kernels.pack(x.row(0), x.cols(), x.rows(), first, 0, 0, padded, packed.data());
  kernels.pack(x.row(0) + first, x.cols(), x.rows(), k - first, 0, first, padded, packed.data());
  return packed;
}

// ---- The dots alone: bf16 × bf16 products are exact in float32, so only the sums round. ----

struct DotCase {
  std::string kernels;
  int64_t rows, k, tokens;
};

class Bf16DotsTest : public ::testing::TestWithParam<DotCase> {};

// Every token range a caller may ask for: all of them, and (past 8) from the second group on.
TEST_P(Bf16DotsTest, MatchLoopsInDouble) {
  const auto& [name, rows, k, tokens] = GetParam();
  const Bf16DotKernels* kernels = KernelsNamed(name);
  SKIP_WITHOUT(kernels, name);
  std::mt19937 rng(static_cast<unsigned>(rows * 1000 + k + tokens));
  const Bf16Matrix w = Bf16Matrix::RoundFrom(RandomMatrix(rows, k, 1.0f, rng));
  const int64_t kp = w.padded_cols();
  const Matrix xf = RandomMatrix(tokens, k, 1.0f, rng);
  const std::vector<uint16_t> packed = Packed(*kernels, xf, kp, /*split=*/5);
  for (const int64_t first : {int64_t{0}, kBf16DotTokenAlign}) {
    if (first >= tokens) continue;
    const int64_t count = tokens - first, ldo = rows + 3;
    std::vector<float> out(count * ldo, -7.0f);
    kernels->dots(w.quad(0), rows, kp, packed.data(), first, count, out.data(), ldo);
    for (int64_t t = 0; t < count; ++t) {
      for (int64_t r = 0; r < rows; ++r) {
        double want = 0, magnitude = 0;
        for (int64_t i = 0; i < k; ++i) {
          const double p =
              static_cast<double>(w.at(r, i)) * Bf16ToF32(F32ToBf16(xf.row(first + t)[i]));
          want += p;
          magnitude += std::abs(p);
        }
        ASSERT_NEAR(out[t * ldo + r], want, (kp + 2) * kE * magnitude + 1e-30)
            << "row " << r << " token " << first + t << " (from token " << first << ")";
      }
      for (int64_t r = rows; r < ldo; ++r) ASSERT_EQ(out[t * ldo + r], -7.0f) << "wrote past rows";
    }
  }
}

std::vector<DotCase> DotCases() {
  std::vector<DotCase> cases;
  for (const std::string& name : kKernelNames) {
    for (int64_t tokens : {1, 3, 12, 13, 16, 17, 64, 257}) {
      for (auto [rows, k] :
           {std::pair<int64_t, int64_t>{1, 16}, {7, 100}, {33, 203}, {4, 1024}, {130, 48}}) {
        cases.push_back({name, rows, k, tokens});
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shapes, Bf16DotsTest, ::testing::ValuesIn(DotCases()),
                         [](const ::testing::TestParamInfo<DotCase>& info) {
                           return absl::StrCat(Identifier(info.param.kernels), "_rows",
                                               info.param.rows, "_k", info.param.k, "_M",
                                               info.param.tokens);
                         });

class Bf16PackTest : public ::testing::TestWithParam<std::string> {};

// Through the identity matrix, dots return the packed values themselves: x rounded to nearest even.
TEST_P(Bf16PackTest, RoundsToNearestEvenLikeTheScalarConversion) {
  const Bf16DotKernels* kernels = KernelsNamed(GetParam());
  SKIP_WITHOUT(kernels, GetParam());
  constexpr int64_t kCols = 37, kTokens = 9;
  std::mt19937 rng(5);
  Matrix x(kTokens, kCols);
  for (int64_t i = 0; i < x.size(); ++i) {
    x.data()[i] = std::ldexp(std::uniform_real_distribution<float>(-1, 1)(rng), 3);
  }
  x.row(0)[0] = 1.0f + 1.0f / 256;  // a tie: rounds to even (1.0)
  x.row(0)[1] = 1.0f + 3.0f / 256;  // a tie: rounds to even (1 + 4/256)
  Matrix eye(kCols, kCols);
  for (int64_t i = 0; i < kCols; ++i) eye.row(i)[i] = 1.0f;
  const Bf16Matrix w = Bf16Matrix::RoundFrom(eye);
  const std::vector<uint16_t> packed = Packed(*kernels, x, w.padded_cols(), /*split=*/19);
  std::vector<float> out(kTokens * kCols);
  kernels->dots(w.quad(0), kCols, w.padded_cols(), packed.data(), 0, kTokens, out.data(), kCols);
  for (int64_t t = 0; t < kTokens; ++t) {
    for (int64_t i = 0; i < kCols; ++i) {
      ASSERT_EQ(out[t * kCols + i], Bf16ToF32(F32ToBf16(x.row(t)[i]))) << t << ", " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Kernels, Bf16PackTest, ::testing::ValuesIn(kKernelNames),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return Identifier(info.param);
                         });

// ---- SwigluForward on the bf16-activation path against the reference in double. ----

// The bound stated at the top, per element of y [tokens, d].
std::vector<double> ErrorBound(const SwigluWeights::F32& w, const Matrix& x) {
  const int64_t d = w.gate.cols(), h = w.gate.rows();
  std::vector<double> bound(x.rows() * d);
  std::vector<double> da(h), a(h);
  for (int64_t t = 0; t < x.rows(); ++t) {
    for (int64_t j = 0; j < h; ++j) {
      double g = 0, u = 0, g_abs = 0, u_abs = 0;
      for (int64_t i = 0; i < d; ++i) {
        const double xi = x.row(t)[i];
        g += w.gate.row(j)[i] * xi;
        u += w.up.row(j)[i] * xi;
        g_abs += std::abs(w.gate.row(j)[i] * xi);
        u_abs += std::abs(w.up.row(j)[i] * xi);
      }
      const double dg = (kU + (d + 2) * kE) * g_abs, du = (kU + (d + 2) * kE) * u_abs;
      const double silu = g / (1 + std::exp(-g));
      a[j] = silu * u;
      const double moved =
          kSiluSlope * dg * (std::abs(u) + du) + (std::abs(silu) + kSiluSlope * dg) * du;
      da[j] = moved + (kU + 8 * kE) * (std::abs(a[j]) + moved);
    }
    for (int64_t o = 0; o < d; ++o) {
      double propagated = 0, magnitude = 0;
      for (int64_t j = 0; j < h; ++j) {
        propagated += std::abs(w.down.row(o)[j]) * da[j];
        magnitude += std::abs(w.down.row(o)[j] * a[j]);
      }
      bound[t * d + o] = propagated + (h + 2) * kE * magnitude;
    }
  }
  return bound;
}

struct FfnCase {
  std::string kernels;
  int64_t d_model, width, tokens;
  int threads;
};

class SwigluBf16DotTest : public ::testing::TestWithParam<FfnCase> {};

TEST_P(SwigluBf16DotTest, WithinTheStatedBoundOfTheReferenceInDouble) {
  const FfnCase& c = GetParam();
  SKIP_WITHOUT(KernelsNamed(c.kernels), c.kernels);
  std::mt19937 rng(static_cast<unsigned>(77 + c.tokens + c.d_model + c.width));
  const SwigluWeights w = RandomWeights(c.d_model, c.width, rng, WeightStorage::kBF16);
  const Matrix x = RandomMatrix(c.tokens, c.d_model, 1.0f, rng);
  // y at a stride wider than d_model: the path writes its rows in place.
  Matrix y_storage(c.tokens, c.d_model + 9);
  std::fill(y_storage.data(), y_storage.data() + y_storage.size(), 1e6f);
  const MatrixView y{y_storage.data(), c.tokens, c.d_model, c.d_model + 9};
  KernelThreadPool pool(c.threads);
  SwigluOptions options;
  options.path = SwigluPath::kBf16Dot;
  options.allow_amx = c.kernels == "amx-bf16";
  options.pool = &pool;
  SwigluReport report;
  options.report = &report;
  ASSERT_TRUE(SwigluForward(w, x, y, options).ok());
  EXPECT_EQ(report.path, SwigluPath::kBf16Dot);
  EXPECT_EQ(report.kernels, c.kernels);

  const SwigluWeights::F32 wide = Widened(w);
  const std::vector<double> want = ReferenceSwiglu(wide, x);
  const std::vector<double> bound = ErrorBound(wide, x);
  const int64_t d = c.d_model;
  double worst_rms_ratio = 0;
  std::vector<double> rms_ratios;
  for (int64_t t = 0; t < c.tokens; ++t) {
    double err2 = 0, ref2 = 0;
    for (int64_t o = 0; o < d; ++o) {
      const double err = std::abs(y.row(t)[o] - want[t * d + o]);
      ASSERT_LE(err, kSecondOrderSlack * bound[t * d + o])
          << "token " << t << " output " << o << " (y " << y.row(t)[o] << ", want "
          << want[t * d + o] << ")";
      err2 += err * err;
      ref2 += want[t * d + o] * want[t * d + o];
    }
    rms_ratios.push_back(std::sqrt(err2 / ref2));
    worst_rms_ratio = std::max(worst_rms_ratio, rms_ratios.back());
    for (int64_t o = d; o < d + 9; ++o) ASSERT_EQ(y.row(t)[o], 1e6f) << "wrote past d_model";
  }
  std::sort(rms_ratios.begin(), rms_ratios.end());
  const double median_rms_ratio = rms_ratios[rms_ratios.size() / 2];
  std::printf("rms error / rms reference: median %.2e, worst %.2e\n", median_rms_ratio,
              worst_rms_ratio);
  EXPECT_LE(median_rms_ratio, 5e-3);  // measured: 2.3e-3 to 3.5e-3
  EXPECT_LE(worst_rms_ratio, 1e-2);   // measured: at most 6.2e-3
}

std::vector<FfnCase> FfnCases() {
  std::vector<FfnCase> cases;
  for (const std::string& name : kKernelNames) {
    for (int64_t tokens : {1, 3, 16, 64, 257}) {
      // Odd widths and d_model not a multiple of 16 or 32; one shape large enough for every block.
      for (auto [d, h] : {std::pair<int64_t, int64_t>{100, 200}, {203, 701}, {35, 33}}) {
        cases.push_back({name, d, h, tokens, 1});
      }
    }
    for (int64_t tokens : {16, 257}) cases.push_back({name, 203, 701, tokens, 2});
    cases.push_back({name, 1000, 300, 70, 2});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shapes, SwigluBf16DotTest, ::testing::ValuesIn(FfnCases()),
                         [](const ::testing::TestParamInfo<FfnCase>& info) {
                           const FfnCase& c = info.param;
                           return absl::StrCat(Identifier(c.kernels), "_d", c.d_model, "_h",
                                               c.width, "_M", c.tokens, "_threads", c.threads);
                         });

// ---- Dispatch. ----

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

// The best bf16-activation kernels this CPU has: "amx-bf16", "avx512bf16" or "" (neither).
std::string BestBf16Kernels() {
  if (AmxBf16DotKernels() != nullptr) return "amx-bf16";
  return Avx512Bf16DotKernels() != nullptr ? "avx512bf16" : "";
}

TEST(SwigluBf16DispatchTest, Bf16WeightsTakeTheBf16PathFromTheSwitchPoint) {
  SKIP_WITHOUT(Avx512Bf16DotKernels(), "avx512bf16");
  std::mt19937 rng(3);
  const SwigluWeights w = RandomWeights(48, 64, rng, WeightStorage::kBF16);
  const int64_t s = SwigluBf16DotMinTokens();
  EXPECT_EQ(Forward(w, s - 1, {}).path, SwigluPath::kStreaming);
  const SwigluReport at = Forward(w, s, {});
  EXPECT_EQ(at.path, SwigluPath::kBf16Dot);
  EXPECT_EQ(at.kernels, BestBf16Kernels());
  EXPECT_EQ(Forward(w, 257, {}).path, SwigluPath::kBf16Dot);
}

// On a CPU with AMX this forces the fall-back; elsewhere it is what runs anyway.
TEST(SwigluBf16DispatchTest, WithoutAmxTheAvx512Bf16KernelsRun) {
  SKIP_WITHOUT(Avx512Bf16DotKernels(), "avx512bf16");
  std::mt19937 rng(8);
  const SwigluWeights w = RandomWeights(48, 64, rng, WeightStorage::kBF16);
  SwigluOptions no_amx;
  no_amx.allow_amx = false;
  const SwigluReport report = Forward(w, 64, no_amx);
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
  EXPECT_STREQ(avx512.kernels, Avx512RowDotKernels() != nullptr ? "avx512" : "portable");

  SwigluOptions portable;
  portable.allow_avx512 = false;  // no AVX-512 at all: no AVX512-BF16 either
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
  EXPECT_EQ(*ParseSwigluKernelCap("portable"), SwigluKernelCap::kPortable);
  const absl::Status bad = ParseSwigluKernelCap("avx1024").status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("auto, avx512bf16, avx512, portable"), std::string::npos) << bad;
}

// Run as is (MOE_KERNELS unset) and by ctest with MOE_KERNELS=avx512bf16, =avx512, =portable and
// =avx1024 (not a level: every call fails naming the accepted values), tests/CMakeLists.txt.
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
      EXPECT_EQ(report.path == SwigluPath::kBf16Dot, !BestBf16Kernels().empty());
      if (report.path == SwigluPath::kBf16Dot) {
        EXPECT_EQ(report.kernels, BestBf16Kernels());
      }
      break;
    case SwigluKernelCap::kAvx512Bf16:
      EXPECT_EQ(report.path == SwigluPath::kBf16Dot, Avx512Bf16DotKernels() != nullptr);
      if (report.path == SwigluPath::kBf16Dot) {
        EXPECT_STREQ(report.kernels, "avx512bf16");
      }
      EXPECT_EQ(summary->find("amx"), std::string::npos) << *summary;
      break;
    case SwigluKernelCap::kAvx512:
      EXPECT_NE(report.path, SwigluPath::kBf16Dot);
      EXPECT_STREQ(report.kernels, Avx512RowDotKernels() != nullptr ? "avx512" : "portable");
      ExpectMatches(y, ReferenceSwiglu(Widened(w), x), "MOE_KERNELS=avx512");
      break;
    case SwigluKernelCap::kPortable:
      EXPECT_STREQ(report.kernels, "portable");
      ExpectMatches(y, ReferenceSwiglu(Widened(w), x), "MOE_KERNELS=portable");
      break;
  }
}

}  // namespace
}  // namespace moe
