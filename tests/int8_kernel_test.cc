// Int8 weight storage (--weights_dtype=int8): the per-row quantisation's round-trip bound, and the
// FFN on int8 weights on every path (streaming, BLAS, chosen by token count) and ISA (AVX512-VNNI,
// AVX-512, AVX2 with int16 dots, AVX2 and portable forced) against a triple-loop reference in
// double — tightly against the dequantised weights (within the int16 rounding of the activations
// for VNNI), loosely (the documented quantisation error) against the original float32 ones.
#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/kernels/int8_matrix.h"
#include "common/kernels/row_dot_kernel.h"
#include "common/kernels/swiglu_ffn.h"
#include "common/kernels/swiglu_weights.h"
#include "common/tensor/matrix.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/swiglu_test_util.h"

namespace moe {
namespace {

// The FFN output's error from quantising the weights, per token: ‖y − ref‖₂ ≤ this · ‖ref‖₂ with
// ref computed on the original float32 weights (README, "int8 weights"). Random uniform weights
// give about 0.6% here (measured: printed by the test); the bound leaves room for other seeds.
constexpr double kInt8RelativeL2 = 0.02;
enum class Kernels { kAvx512Vnni, kAvx512, kAvx2Int16, kAvx2, kPortable };

const char* KernelsName(Kernels kernels) {
  return kernels == Kernels::kAvx512Vnni  ? "avx512vnni"
         : kernels == Kernels::kAvx512    ? "avx512"
         : kernels == Kernels::kAvx2Int16 ? "avx2-int16"
         : kernels == Kernels::kAvx2      ? "avx2"
                                          : "portable";
}

bool Available(Kernels kernels) {
  return kernels == Kernels::kAvx512Vnni  ? Avx512VnniRowDotKernels() != nullptr
         : kernels == Kernels::kAvx512    ? Avx512RowDotKernels() != nullptr
         : kernels == Kernels::kAvx2Int16 ? Avx2Int16RowDotKernels() != nullptr
         : kernels == Kernels::kAvx2      ? Avx2RowDotKernels() != nullptr
                                          : true;
}

// The sets with int16 int8 dots this CPU runs.
std::vector<const RowDotKernels*> Int16Sets() {
  std::vector<const RowDotKernels*> sets;
  for (const RowDotKernels* set : {Avx512VnniRowDotKernels(), Avx2Int16RowDotKernels()}) {
    if (set != nullptr) sets.push_back(set);
  }
  return sets;
}

TEST(Int8MatrixTest, QuantisesEachRowWithinHalfAStepOfItsScale) {
  std::mt19937 rng(5);
  Matrix m = RandomMatrix(7, 37, 1.0f, rng);  // odd sizes: padding rows and columns
  for (int64_t c = 0; c < m.cols(); ++c) {
    m.row(1)[c] *= 1e-6f;  // a tiny row keeps its own scale
    m.row(2)[c] = 0.0f;    // a row of zeros
    m.row(3)[c] *= 300.0f;
  }
  const Int8Matrix q = Int8Matrix::Quantize(m);
  ASSERT_EQ(q.rows(), 7);
  ASSERT_EQ(q.cols(), 37);
  EXPECT_EQ(q.padded_cols(), 48);
  for (int64_t r = 0; r < m.rows(); ++r) {
    float max_abs = 0;
    for (int64_t c = 0; c < m.cols(); ++c) max_abs = std::max(max_abs, std::abs(m.row(r)[c]));
    EXPECT_FLOAT_EQ(q.scale(r), max_abs / 127.0f) << "row " << r;
    int max_q = 0;
    for (int64_t c = 0; c < m.cols(); ++c) {
      max_q = std::max(max_q, std::abs(static_cast<int>(q.q(r, c))));
      EXPECT_LE(std::abs(q.at(r, c) - m.row(r)[c]), 0.5f * q.scale(r) * (1 + 1e-5f))
          << "row " << r << " col " << c;
    }
    EXPECT_EQ(max_q, r == 2 ? 0 : 127) << "the largest magnitude maps to ±127, row " << r;
  }
  const Matrix back = q.ToF32();
  for (int64_t c = 0; c < m.cols(); ++c) EXPECT_EQ(back.row(2)[c], 0.0f);
  EXPECT_EQ(back.row(4)[5], q.at(4, 5));
  // 8 rows (padded to quads) × 48 columns of int8, plus 8 scales.
  EXPECT_EQ(q.bytes(), 8 * 48 + 8 * 4);
}

TEST(Int8MatrixTest, StorageIsAQuarterOfFloat32) {
  std::mt19937 rng(6);
  const SwigluWeights f32 = RandomWeights(256, 512, rng);
  auto int8 = SwigluWeights::FromF32(Widened(f32).gate, Widened(f32).up, Widened(f32).down,
                                     WeightStorage::kInt8);
  ASSERT_TRUE(int8.ok()) << int8.status();
  EXPECT_EQ(int8->storage(), WeightStorage::kInt8);
  ASSERT_NE(int8->int8(), nullptr);
  EXPECT_EQ(int8->f32(), nullptr);
  EXPECT_EQ(int8->bf16(), nullptr);
  // 3 · 256 · 512 values of one byte and one float scale per row (512 + 512 + 256 rows).
  EXPECT_EQ(int8->bytes(), 3 * 256 * 512 + 4 * (512 + 512 + 256));
}

TEST(Int8MatrixTest, QuadsStartOnACacheLine) {  // a quad is whole 64-byte chunks
  std::mt19937 rng(8);
  for (int64_t cols : {1, 100, 2048}) {
    const Int8Matrix q = Int8Matrix::Quantize(RandomMatrix(5, cols, 1.0f, rng));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(q.quad(0)) % kCacheLineBytes, 0u) << cols;
  }
}

TEST(Int8MatrixTest, RefusesToQuantiseNonFiniteWeightsNamingTheElement) {
  std::mt19937 rng(7);
  Matrix gate = RandomMatrix(4, 3, 1.0f, rng), up = RandomMatrix(4, 3, 1.0f, rng);
  Matrix down = RandomMatrix(3, 4, 1.0f, rng);
  down.row(2)[1] = std::numeric_limits<float>::quiet_NaN();
  auto w = SwigluWeights::FromF32(gate, up, down, WeightStorage::kInt8);
  ASSERT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(w.status().message()),
              ::testing::AllOf(::testing::HasSubstr("down"), ::testing::HasSubstr("[2,1]"),
                               ::testing::HasSubstr("finite")));
}

struct Int8Case {
  SwigluPath path;
  Kernels kernels;
  int64_t d_model;
  int64_t width;
  int64_t tokens;
};

std::string CaseName(const ::testing::TestParamInfo<Int8Case>& info) {
  const Int8Case& c = info.param;
  const char* path = c.path == SwigluPath::kAuto        ? "Auto"
                     : c.path == SwigluPath::kStreaming ? "Streaming"
                                                        : "Blas";
  std::string kernels = KernelsName(c.kernels);
  kernels.erase(std::remove(kernels.begin(), kernels.end(), '-'), kernels.end());
  return absl::StrCat(path, "_", kernels, "_d", c.d_model, "_h", c.width, "_M", c.tokens);
}

std::vector<Int8Case> AllCases() {
  std::vector<Int8Case> cases;
  for (SwigluPath path : {SwigluPath::kAuto, SwigluPath::kStreaming, SwigluPath::kBlas}) {
    for (Kernels kernels : {Kernels::kAvx512Vnni, Kernels::kAvx512, Kernels::kAvx2Int16,
                            Kernels::kAvx2, Kernels::kPortable}) {
      // Odd sizes (not multiples of 16 or 4); the larger one is above the pool's threshold.
      for (auto [d, h] : {std::pair<int64_t, int64_t>{100, 200}, {203, 701}}) {
        for (int64_t m : {1, 3, 16, 64, 257}) cases.push_back({path, kernels, d, h, m});
      }
    }
  }
  return cases;
}

class Int8SwigluTest : public ::testing::TestWithParam<Int8Case> {};

TEST_P(Int8SwigluTest, MatchesDequantisedReferenceAndStaysNearFloat32) {
  const Int8Case& c = GetParam();
  if (!Available(c.kernels)) GTEST_SKIP() << "this CPU cannot run " << KernelsName(c.kernels);
  std::mt19937 rng(static_cast<unsigned>(2000 + c.tokens + c.d_model));
  const SwigluWeights f32 = RandomWeights(c.d_model, c.width, rng);
  const SwigluWeights::F32& original = *f32.f32();
  auto int8 =
      SwigluWeights::FromF32(original.gate, original.up, original.down, WeightStorage::kInt8);
  ASSERT_TRUE(int8.ok()) << int8.status();
  const Matrix x = RandomMatrix(c.tokens, c.d_model, 1.0f, rng);
  Matrix y(c.tokens, c.d_model);
  std::fill(y.data(), y.data() + y.size(), 1e6f);  // must be overwritten

  SwigluOptions options;
  options.path = c.path;
  options.allow_avx512 = c.kernels == Kernels::kAvx512Vnni || c.kernels == Kernels::kAvx512;
  options.allow_avx2 = c.kernels != Kernels::kPortable;
  options.allow_int16_dots = c.kernels == Kernels::kAvx512Vnni || c.kernels == Kernels::kAvx2Int16;
  SwigluReport report;
  options.report = &report;
  ASSERT_TRUE(SwigluForward(*int8, x, y.view(), options).ok());
  if (c.path != SwigluPath::kAuto) {
    EXPECT_EQ(report.path, c.path);
  }
  EXPECT_STREQ(report.kernels, KernelsName(c.kernels));

  // Tight: the kernels add only float32 rounding to the dequantised weights' exact result (and
  // the int16 streaming dots the activations' int16 rounding).
  ExpectMatches(y, ReferenceSwiglu(Widened(*int8), x), CaseName({c, 0}), SwigluToleranceOf(report));

  // Loose: the quantisation error against the original weights, per token.
  const std::vector<double> exact = ReferenceSwiglu(original, x);
  const int64_t d = c.d_model;
  double worst = 0;
  for (int64_t t = 0; t < c.tokens; ++t) {
    double err2 = 0, norm2 = 0;
    for (int64_t i = 0; i < d; ++i) {
      const double e = y.row(t)[i] - exact[t * d + i];
      err2 += e * e;
      norm2 += exact[t * d + i] * exact[t * d + i];
    }
    worst = std::max(worst, std::sqrt(err2 / norm2));
  }
  EXPECT_LE(worst, kInt8RelativeL2);
  RecordProperty("worst_token_relative_l2_vs_f32", absl::StrCat(worst));
}

INSTANTIATE_TEST_SUITE_P(AllPaths, Int8SwigluTest, ::testing::ValuesIn(AllCases()), CaseName);

// The int8 row dots on their own, rows not a multiple of four, against double: the AVX-512 set
// and the AVX2 one (where the CPU has them) and the portable one give the same sums to float32
// rounding.
TEST(Int8RowDotTest, EveryKernelSetMatchesDoubleOnOddRowCounts) {
  std::mt19937 rng(9);
  const int64_t rows = 11, cols = 45, tokens = 7;
  const Int8Matrix w = Int8Matrix::Quantize(RandomMatrix(rows, cols, 1.0f, rng));
  const int64_t k = w.padded_cols();
  Matrix x(tokens, k);  // zeros past cols, as the kernels require
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < cols; ++i)
      x.row(t)[i] = std::uniform_real_distribution<float>(-1, 1)(rng);
  }
  std::vector<const RowDotKernels*> sets = {&PortableRowDotKernels()};
  if (Avx512RowDotKernels() != nullptr) sets.push_back(Avx512RowDotKernels());
  if (Avx2RowDotKernels() != nullptr) sets.push_back(Avx2RowDotKernels());
  for (const RowDotKernels* kernels : sets) {
    SCOPED_TRACE(kernels->name);
    // From row 4 on: a quad boundary that is not the matrix's first.
    std::vector<float> out(tokens * rows, 1e6f);
    kernels->dots_int8(w.quad(1), w.scales(4), rows - 4, k, x.data(), k, tokens, out.data(), rows);
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t r = 4; r < rows; ++r) {
        double want = 0, magnitude = 0;
        for (int64_t i = 0; i < cols; ++i) {
          want += static_cast<double>(w.at(r, i)) * x.row(t)[i];
          magnitude += std::abs(static_cast<double>(w.at(r, i)) * x.row(t)[i]);
        }
        EXPECT_NEAR(out[t * rows + (r - 4)], want, 1e-6 * magnitude)
            << "token " << t << " row " << r;
      }
    }
    std::vector<float> unpacked(rows * cols);
    kernels->unpack_int8(w.quad(0), w.scales(0), rows, k, cols, unpacked.data(), cols);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) EXPECT_EQ(unpacked[r * cols + c], w.at(r, c));
    }
  }
}

// Rows 4-10 of an 11-row matrix of `cols` columns against `tokens` random tokens through
// `kernels`' int16 rounding and int8 dots: exactly the int32 sums of the rounded activations (so to
// float32 rounding against double), and within the rounding's bound of the float activations.
void ExpectInt16DotsSumTheRoundedActivations(const RowDotKernels& kernels, int64_t cols,
                                             int64_t tokens, std::mt19937& rng) {
  const int64_t rows = 11;
  const Int8Matrix w = Int8Matrix::Quantize(RandomMatrix(rows, cols, 1.0f, rng));
  const int64_t k = w.padded_cols();
  Matrix x(tokens, k);  // zeros past cols
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < cols; ++i) {
      x.row(t)[i] = std::uniform_real_distribution<float>(-1, 1)(rng) * (t + 1);
    }
  }
  std::vector<int16_t> xq(tokens * k);
  std::vector<float> x_scales(tokens);
  bool finite = false;
  kernels.quantize_activations(x.data(), k, tokens, k, xq.data(), k, x_scales.data(), &finite);
  ASSERT_TRUE(finite);
  std::vector<float> out(tokens * rows, 1e6f);
  kernels.dots_int8_quantized(w.quad(1), w.scales(4), rows - 4, k, xq.data(), k, x_scales.data(),
                              tokens, out.data(), rows);
  for (int64_t t = 0; t < tokens; ++t) {
    double max_abs = 0;
    for (int64_t i = 0; i < cols; ++i) max_abs = std::max(max_abs, double{std::abs(x.row(t)[i])});
    EXPECT_NEAR(x_scales[t], max_abs / Int8ActivationLevels(k), 1e-6 * max_abs);
    for (int64_t r = 4; r < rows; ++r) {
      double rounded = 0, exact = 0, magnitude = 0, bound = 0;
      for (int64_t i = 0; i < cols; ++i) {
        const double wi = w.at(r, i);
        // Half a step, and the float roundings of the scale and of x ÷ scale (each ≤ 2^-24
        // relative, on values up to the levels: ≤ 2^-9 of a step together)
        EXPECT_LE(std::abs(double{x_scales[t]} * xq[t * k + i] - x.row(t)[i]),
                  (0.5 + 0x1p-9) * x_scales[t]);
        rounded += wi * x_scales[t] * xq[t * k + i];
        exact += wi * x.row(t)[i];
        magnitude += std::abs(wi * x_scales[t] * xq[t * k + i]);
        bound += std::abs(wi) * 0.5 * x_scales[t];
      }
      const float got = out[t * rows + (r - 4)];
      EXPECT_NEAR(got, rounded, 1e-6 * magnitude) << "token " << t << " row " << r;
      EXPECT_NEAR(got, exact, bound + 1e-6 * magnitude) << "token " << t << " row " << r;
    }
  }
}

// Rows not a multiple of four, token counts that fill tiles unevenly, 3 and 4 lines of 16 columns.
TEST(Int8RowDotTest, Int16DotsSumTheRoundedActivationsExactly) {
  if (Int16Sets().empty()) GTEST_SKIP() << "this CPU has neither AVX512-VNNI nor AVX2";
  for (const RowDotKernels* kernels : Int16Sets()) {
    std::mt19937 rng(10);
    for (int64_t cols : {45, 64}) {
      for (int64_t tokens : {1, 2, 3, 9, 17}) {
        SCOPED_TRACE(absl::StrCat(kernels->name, ", ", cols, " columns, ", tokens, " tokens"));
        ExpectInt16DotsSumTheRoundedActivations(*kernels, cols, tokens, rng);
      }
    }
  }
}

// The largest sums the levels allow (every weight and activation at its extreme, one sign) stay
// inside int32 at a long k, where fewer levels are used.
TEST(Int8RowDotTest, Int16DotsDoNotOverflowAtTheLargestSums) {
  if (Int16Sets().empty()) GTEST_SKIP() << "this CPU has neither AVX512-VNNI nor AVX2";
  for (const RowDotKernels* kernels : Int16Sets()) {
    SCOPED_TRACE(kernels->name);
    const int64_t k = 20000;
    ASSERT_LT(Int8ActivationLevels(k), 16383);
    Matrix ones(4, k);
    std::fill(ones.data(), ones.data() + ones.size(), 1.0f);
    for (int64_t c = 0; c < k; ++c) ones.row(3)[c] = -1.0f;
    const Int8Matrix w = Int8Matrix::Quantize(ones);  // q = ±127, scale 1/127
    Matrix x(1, k);
    std::fill(x.data(), x.data() + x.size(), 2.5f);
    std::vector<int16_t> xq(k);
    float x_scale = 0;
    bool finite = false;
    kernels->quantize_activations(x.data(), k, 1, k, xq.data(), k, &x_scale, &finite);
    ASSERT_TRUE(finite);
    EXPECT_EQ(xq[0], Int8ActivationLevels(k));
    std::vector<float> out(4);
    kernels->dots_int8_quantized(w.quad(0), w.scales(0), 4, k, xq.data(), k, &x_scale, 1,
                                 out.data(), 4);
    for (int r = 0; r < 3; ++r) EXPECT_NEAR(out[r], 2.5 * k, 1e-5 * 2.5 * k) << "row " << r;
    EXPECT_NEAR(out[3], -2.5 * k, 1e-5 * 2.5 * k);
  }
}

// One NaN among finite values, wherever it falls (first, inside, last lane of a register), stops
// the rounding: vmaxps alone would drop it (it keeps its second operand when one is NaN).
TEST(Int8RowDotTest, Int16RoundingRefusesANanAmongFiniteValues) {
  if (Int16Sets().empty()) GTEST_SKIP() << "this CPU has neither AVX512-VNNI nor AVX2";
  const int64_t k = 48;
  for (const RowDotKernels* kernels : Int16Sets()) {
    for (int64_t at : {int64_t{0}, int64_t{5}, int64_t{7}, int64_t{15}, int64_t{16}, k - 1}) {
      SCOPED_TRACE(absl::StrCat(kernels->name, ", NaN at ", at));
      std::vector<float> x(k, 2.0f);
      x[at] = std::numeric_limits<float>::quiet_NaN();
      std::vector<int16_t> xq(k);
      float x_scale = 0;
      bool finite = true;
      kernels->quantize_activations(x.data(), k, 1, k, xq.data(), k, &x_scale, &finite);
      EXPECT_FALSE(finite);
    }
  }
}

// y = FFN(x) on the streaming path, with or without the int16 dots; `kernels` names those run.
Matrix StreamingForward(const SwigluWeights& w, const Matrix& x, bool int16_dots,
                        std::string* kernels) {
  SwigluOptions options;
  options.path = SwigluPath::kStreaming;
  options.allow_int16_dots = int16_dots;
  SwigluReport report;
  options.report = &report;
  Matrix y(x.rows(), x.cols());
  EXPECT_TRUE(SwigluForward(w, x, y.view(), options).ok());
  *kernels = report.kernels;
  return y;
}

// An input that overflows an expert's hidden activations (finite x, infinite gate · x) cannot be
// rounded to int16: that phase keeps the float dots, and the output is not finite, as with the
// widening kernels, so the shard can report the overflow.
TEST(Int8SwigluInt16Test, OverflowingActivationsFallBackToFloatDots) {
  if (Int16Sets().empty()) GTEST_SKIP() << "this CPU has neither AVX512-VNNI nor AVX2";
  std::mt19937 rng(11);
  const SwigluWeights f32 = RandomWeights(64, 128, rng);
  auto int8 =
      SwigluWeights::FromF32(f32.f32()->gate, f32.f32()->up, f32.f32()->down, WeightStorage::kInt8);
  ASSERT_TRUE(int8.ok());
  Matrix x(2, 64);
  std::fill(x.data(), x.data() + x.size(), 3e37f);
  for (bool int16_dots : {true, false}) {
    std::string kernels;
    const Matrix y = StreamingForward(*int8, x, int16_dots, &kernels);
    bool all_finite = true;
    for (int64_t i = 0; i < y.size(); ++i) all_finite = all_finite && std::isfinite(y.data()[i]);
    EXPECT_FALSE(all_finite) << kernels;
  }
}

// One NaN among finite hidden activations (silu(∞) · 0: gate row 0 overflows, up row 0 is zero,
// every other activation is 0) must reach the output as a non-finite value, whatever the kernels:
// the int16 sets' vector maximum can drop a NaN, leaving an all-finite, wrong output.
TEST(Int8SwigluInt16Test, ANanAmongFiniteHiddenActivationsReachesTheOutput) {
  const int64_t d = 32, h = 64;
  Matrix gate(h, d), up(h, d), down(d, h);
  std::fill(gate.row(0), gate.row(0) + d, 1.0f);
  std::fill(down.data(), down.data() + down.size(), 0.5f);
  for (int64_t j = 1; j < h; ++j) std::fill(up.row(j), up.row(j) + d, 0.25f);  // gate rows: 0
  auto int8 = SwigluWeights::FromF32(gate, up, down, WeightStorage::kInt8);
  ASSERT_TRUE(int8.ok()) << int8.status();
  Matrix x(1, d);
  std::fill(x.data(), x.data() + x.size(), 3e37f);
  for (bool int16_dots : {true, false}) {
    std::string kernels;
    const Matrix y = StreamingForward(*int8, x, int16_dots, &kernels);
    for (int64_t i = 0; i < d; ++i) EXPECT_FALSE(std::isfinite(y.row(0)[i])) << kernels;
  }
}

}  // namespace
}  // namespace moe
