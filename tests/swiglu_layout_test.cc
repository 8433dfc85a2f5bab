// SwigluForward on strided views: x read in place when it has the streaming kernel's layout
// (SwigluInputStride, zero padding), copied otherwise, and y written through its stride without
// touching the padding, on both paths. What the kernel did is what it reports.
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/kernels/swiglu_ffn.h"
#include "common/tensor/matrix.h"
#include "gtest/gtest.h"
#include "tests/swiglu_test_util.h"

namespace moe {
namespace {

constexpr float kSentinel = -777.0f;

// Token rows `stride` floats apart, padding set to `padding`.
std::vector<float> Strided(const Matrix& x, int64_t stride, float padding) {
  std::vector<float> out(x.rows() * stride, padding);
  for (int64_t t = 0; t < x.rows(); ++t) std::copy(x.row(t), x.row(t) + x.cols(), &out[t * stride]);
  return out;
}

struct LayoutCase {
  WeightStorage storage;
  SwigluPath path;
};

class SwigluLayoutTest : public ::testing::TestWithParam<LayoutCase> {
 protected:
  // Runs one call on x laid out with `stride` and `padding`, into a y of stride d + 5 whose
  // padding must survive; returns what the kernel reported.
  SwigluReport Run(int64_t stride, float padding) {
    const LayoutCase& c = GetParam();
    std::mt19937 rng(7);
    const int64_t d = 100, h = 200, tokens = 5;
    const SwigluWeights w = RandomWeights(d, h, rng, c.storage);
    const Matrix x = RandomMatrix(tokens, d, 1.0f, rng);
    const std::vector<float> xs = Strided(x, stride, padding);
    const int64_t ldy = d + 5;
    std::vector<float> ys(tokens * ldy, kSentinel);
    SwigluReport report;
    SwigluOptions options;
    options.path = c.path;
    options.report = &report;
    const absl::Status status = SwigluForward(w, ConstMatrixView(xs.data(), tokens, d, stride),
                                              MatrixView(ys.data(), tokens, d, ldy), options);
    EXPECT_TRUE(status.ok()) << status;
    const std::string what = absl::StrCat("stride ", stride, " padding ", padding);
    ExpectMatches(ConstMatrixView(ys.data(), tokens, d, ldy), ReferenceSwiglu(Widened(w), x), what,
                  SwigluToleranceOf(report));
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t i = d; i < ldy; ++i) EXPECT_EQ(ys[t * ldy + i], kSentinel) << what;
    }
    EXPECT_EQ(report.path, c.path);
    return report;
  }
};

TEST_P(SwigluLayoutTest, ReadsInputInPlaceWhenItHasTheKernelsStrideAndZeroPadding) {
  const SwigluReport report = Run(SwigluInputStride(100), 0.0f);
  if (GetParam().path == SwigluPath::kStreaming) {
    EXPECT_FALSE(report.copied_input);
  }
}

TEST_P(SwigluLayoutTest, CopiesInputWithAnyOtherStride) {
  const SwigluReport packed = Run(100, 0.0f);
  const SwigluReport odd = Run(103, 0.0f);
  if (GetParam().path == SwigluPath::kStreaming) {
    EXPECT_TRUE(packed.copied_input);
    EXPECT_TRUE(odd.copied_input);
  }
}

TEST_P(SwigluLayoutTest, CopiesInputWhosePaddingIsNotZero) {
  // The kernel's stride, but the owner left garbage in the padding the BF16 and int8 dots would
  // read.
  const SwigluReport report = Run(SwigluInputStride(100), 3.0f);
  if (GetParam().path == SwigluPath::kStreaming) {
    EXPECT_TRUE(report.copied_input);
  }
}

INSTANTIATE_TEST_SUITE_P(PathsAndStorages, SwigluLayoutTest,
                         ::testing::Values(LayoutCase{WeightStorage::kF32, SwigluPath::kStreaming},
                                           LayoutCase{WeightStorage::kBF16, SwigluPath::kStreaming},
                                           LayoutCase{WeightStorage::kF32, SwigluPath::kBlas},
                                           LayoutCase{WeightStorage::kBF16, SwigluPath::kBlas},
                                           LayoutCase{WeightStorage::kInt8, SwigluPath::kStreaming},
                                           LayoutCase{WeightStorage::kInt8, SwigluPath::kBlas}),
                         [](const ::testing::TestParamInfo<LayoutCase>& info) {
                           return absl::StrCat(
                               info.param.storage == WeightStorage::kBF16   ? "Bf16"
                               : info.param.storage == WeightStorage::kInt8 ? "Int8"
                                                                            : "F32",
                               info.param.path == SwigluPath::kBlas ? "Blas" : "Streaming");
                         });

TEST(SwigluInputStrideTest, PadsToWholeChunksPlusOneChunk) {
  EXPECT_EQ(SwigluInputStride(1), 32);
  EXPECT_EQ(SwigluInputStride(16), 32);
  EXPECT_EQ(SwigluInputStride(100), 128);
  EXPECT_EQ(SwigluInputStride(1024), 1040);
}

}  // namespace
}  // namespace moe
