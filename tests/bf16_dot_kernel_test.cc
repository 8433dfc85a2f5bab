// The bf16 dot kernels (common/kernels/bf16_dot_kernel.h), each of them (AVX512-BF16 and
// AMX-BF16; a kernel this CPU lacks is skipped, saying so): the dots against loops in double, over
// bf16 weights and, for the staged AMX kernel, int8 ones, and the packing's rounding. The FFN path
// built on them: swiglu_bf16_path_test.cc.
#include "common/kernels/bf16_dot_kernel.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/kernels/int8_matrix.h"
#include "common/tensor/bf16_matrix.h"
#include "common/tensor/dtype.h"
#include "gtest/gtest.h"
#include "tests/bf16_dot_test_util.h"
#include "tests/swiglu_test_util.h"

namespace moe {
namespace {

constexpr double kE = 1.0 / (1 << 24);  // float32: 2^-24

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

// Runs dots(first, count, out, ldo) for every token range a caller may ask for (all of them, and
// past 16 from the second group on) and checks every sum against Σ_i weight(r, i) · bf16(x_t[i])
// in double, within `roundings` float32 roundings of Σ|products|, and that nothing past `rows` of
// a token's output was written.
void ExpectDotsMatchDouble(
    int64_t rows, const Matrix& xf, int64_t roundings,
    const std::function<void(int64_t first, int64_t count, float* out, int64_t ldo)>& dots,
    const std::function<double(int64_t r, int64_t i)>& weight) {
  const int64_t tokens = xf.rows(), k = xf.cols();
  for (const int64_t first : {int64_t{0}, kBf16DotTokenAlign}) {
    if (first >= tokens) continue;
    const int64_t count = tokens - first, ldo = rows + 3;
    std::vector<float> out(count * ldo, -7.0f);
    dots(first, count, out.data(), ldo);
    for (int64_t t = 0; t < count; ++t) {
      for (int64_t r = 0; r < rows; ++r) {
        double want = 0, magnitude = 0;
        for (int64_t i = 0; i < k; ++i) {
          const double p = weight(r, i) * Bf16ToF32(F32ToBf16(xf.row(first + t)[i]));
          want += p;
          magnitude += std::abs(p);
        }
        ASSERT_NEAR(out[t * ldo + r], want, roundings * kE * magnitude + 1e-30)
            << "row " << r << " token " << first + t << " (from token " << first << ")";
      }
      for (int64_t r = rows; r < ldo; ++r) ASSERT_EQ(out[t * ldo + r], -7.0f) << "wrote past rows";
    }
  }
}

// ---- The dots alone: bf16 × bf16 products are exact in float32, so only the sums round. ----

struct DotCase {
  std::string kernels;
  int64_t rows, k, tokens;
};

class Bf16DotsTest : public ::testing::TestWithParam<DotCase> {};

TEST_P(Bf16DotsTest, MatchLoopsInDouble) {
  const std::string& name = GetParam().kernels;  // (not a structured binding: lambdas use rows)
  const int64_t rows = GetParam().rows, k = GetParam().k, tokens = GetParam().tokens;
  const Bf16DotKernels* kernels = KernelsNamed(name);
  SKIP_WITHOUT(kernels, name);
  std::mt19937 rng(static_cast<unsigned>(rows * 1000 + k + tokens));
  const Bf16Matrix w = Bf16Matrix::RoundFrom(RandomMatrix(rows, k, 1.0f, rng));
  const int64_t kp = w.padded_cols();
  const Matrix xf = RandomMatrix(tokens, k, 1.0f, rng);
  const std::vector<uint16_t> packed = Packed(*kernels, xf, kp, /*split=*/5);
  ExpectDotsMatchDouble(
      rows, xf, kp + 2,
      [&](int64_t first, int64_t count, float* out, int64_t ldo) {
        kernels->dots(w.quad(0), rows, kp, packed.data(), first, count, out, ldo);
      },
      [&](int64_t r, int64_t i) { return static_cast<double>(w.at(r, i)); });
}

std::vector<DotCase> DotCases() {
  std::vector<DotCase> cases;
  for (const std::string& name : kKernelNames) {
    for (int64_t tokens : {1, 3, 4, 5, 6, 7, 12, 13, 16, 17, 24, 25, 33, 64, 257}) {
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

// ---- Over int8 weights (dots_int8, the staged AMX kernel): q exact in bf16, the scale after. ----

class Int8Bf16DotsTest : public ::testing::TestWithParam<DotCase> {};

TEST_P(Int8Bf16DotsTest, MatchLoopsInDouble) {
  const std::string& name = GetParam().kernels;  // (not a structured binding: lambdas use rows)
  const int64_t rows = GetParam().rows, k = GetParam().k, tokens = GetParam().tokens;
  const Bf16DotKernels* kernels = KernelsNamed(name);
  SKIP_WITHOUT(kernels, name);
  ASSERT_NE(kernels->dots_int8, nullptr);
  std::mt19937 rng(static_cast<unsigned>(rows * 1000 + k + tokens + 7));
  Matrix values = RandomMatrix(rows, k, 1.0f, rng);
  for (int64_t c = 0; c < k; ++c) values.row(0)[c] *= 1e-3f;  // rows of their own scales
  const Int8Matrix w = Int8Matrix::Quantize(values);
  const int64_t kp = w.padded_cols();
  const Matrix xf = RandomMatrix(tokens, k, 1.0f, rng);
  const std::vector<uint16_t> packed = Packed(*kernels, xf, kp, /*split=*/5);
  // One more rounding than bf16 weights': the sum times the row's scale.
  ExpectDotsMatchDouble(
      rows, xf, kp + 3,
      [&](int64_t first, int64_t count, float* out, int64_t ldo) {
        kernels->dots_int8(w.quad(0), w.scales(0), rows, kp, packed.data(), first, count, out, ldo);
      },
      [&](int64_t r, int64_t i) { return static_cast<double>(w.scale(r)) * w.q(r, i); });
}

INSTANTIATE_TEST_SUITE_P(Shapes, Int8Bf16DotsTest, ::testing::ValuesIn([] {
                           std::vector<DotCase> cases;
                           for (const DotCase& c : DotCases()) {
                             if (c.kernels == "amx-bf16-staged") cases.push_back(c);
                           }
                           return cases;
                         }()),
                         [](const ::testing::TestParamInfo<DotCase>& info) {
                           return absl::StrCat(Identifier(info.param.kernels), "_rows",
                                               info.param.rows, "_k", info.param.k, "_M",
                                               info.param.tokens);
                         });

// Only the staged AMX kernel takes int8 weights.
TEST(Int8Bf16DotsTest, OnlyTheStagedAmxKernelTakesInt8Weights) {
  for (const std::string& name : kKernelNames) {
    const Bf16DotKernels* kernels = KernelsNamed(name);
    if (kernels == nullptr) continue;
    const bool staged = name == "amx-bf16-staged";
    EXPECT_EQ(kernels->dots_int8 != nullptr, staged) << name;
    EXPECT_EQ(kernels->int8_min_tokens, staged ? kInt8StagedMinTokens : 0) << name;
  }
  EXPECT_EQ(Int8Bf16DotKernels(/*allow_amx=*/true, kInt8StagedMinTokens),
            AmxBf16StagedDotKernels());
  EXPECT_EQ(Int8Bf16DotKernels(/*allow_amx=*/true, kInt8StagedMinTokens - 1), nullptr);
  EXPECT_EQ(Int8Bf16DotKernels(/*allow_amx=*/false, 1024), nullptr);
}

// The AVX512-BF16 set reads calls of a few tokens the way this process reads one token's weight
// streams: one quad at a time with one stream (a Zen 4's default), two parts with four.
TEST(Avx512Bf16DotKernelsTest, ReadFewTokensAsTheProcessReadsOneTokensStreams) {
  SKIP_WITHOUT(Avx512Bf16DotKernels(), "avx512bf16");
  const Bf16DotKernels* one_stream = Avx512Bf16DotKernels(1);
  const Bf16DotKernels* parts = Avx512Bf16DotKernels(4);
  ASSERT_NE(one_stream, nullptr);
  ASSERT_NE(parts, nullptr);
  EXPECT_NE(one_stream->dots, parts->dots);
  EXPECT_STREQ(one_stream->name, "avx512bf16");
  EXPECT_STREQ(parts->name, "avx512bf16");
  EXPECT_EQ(Avx512Bf16DotKernels(), ProcessOneTokenStreams() == 1 ? one_stream : parts);
  EXPECT_EQ(Avx512Bf16DotKernels(2), nullptr) << "2 is not a stream choice";
}

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

}  // namespace
}  // namespace moe
