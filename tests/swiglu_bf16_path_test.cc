// SwigluForward on the bf16-activation path (SwigluBf16Dot, common/kernels/swiglu_paths.h), once
// per kernel (AVX512-BF16 and AMX-BF16; a kernel this CPU lacks is skipped, saying so), against
// the triple-loop reference in double (tests/swiglu_test_util.h) within the error bound below.
//
// Error bound of the path, element by element (u = 2^-9, the relative rounding error of a bf16
// round-to-nearest; e = 2^-24, float32's). Weights are bf16 already (the reference uses them
// exactly), or int8 on the staged AMX kernel (the reference uses scale · q; the kernel multiplies
// the exact q by bf16 x and scales the float32 sum, one more rounding of e, within the slack). x is
// rounded to bf16, so each product w·x gains a relative error ≤ u, and the float32 sums of k exact
// bf16 products add ≤ (k + 2)·e of Σ|w·x|:
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
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/kernels/swiglu_ffn.h"
#include "common/kernels/thread_pool.h"
#include "gtest/gtest.h"
#include "tests/bf16_dot_test_util.h"
#include "tests/swiglu_test_util.h"

namespace moe {
namespace {

constexpr double kU = 1.0 / 512;        // bf16 round to nearest: 2^-9
constexpr double kE = 1.0 / (1 << 24);  // float32: 2^-24
constexpr double kSiluSlope = 1.1;      // max |d/dg silu(g)| = 1.0998…
constexpr double kSecondOrderSlack = 1.25;

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
  WeightStorage storage = WeightStorage::kBF16;  // kInt8: the staged AMX kernel's dots_int8
};

class SwigluBf16DotTest : public ::testing::TestWithParam<FfnCase> {};

TEST_P(SwigluBf16DotTest, WithinTheStatedBoundOfTheReferenceInDouble) {
  const FfnCase& c = GetParam();
  SKIP_WITHOUT(KernelsNamed(c.kernels), c.kernels);
  std::mt19937 rng(static_cast<unsigned>(77 + c.tokens + c.d_model + c.width));
  const SwigluWeights w = RandomWeights(c.d_model, c.width, rng, c.storage);
  const Matrix x = RandomMatrix(c.tokens, c.d_model, 1.0f, rng);
  // y at a stride wider than d_model: the path writes its rows in place.
  Matrix y_storage(c.tokens, c.d_model + 9);
  std::fill(y_storage.data(), y_storage.data() + y_storage.size(), 1e6f);
  const MatrixView y{y_storage.data(), c.tokens, c.d_model, c.d_model + 9};
  KernelThreadPool pool(c.threads);
  SwigluOptions options;
  options.path = SwigluPath::kBf16Dot;
  options.allow_amx = c.kernels != "avx512bf16";  // in place up to 16 tokens, staged past that
  options.pool = &pool;
  SwigluReport report;
  options.report = &report;
  ASSERT_TRUE(SwigluForward(w, x, y, options).ok());
  EXPECT_EQ(report.path, SwigluPath::kBf16Dot);
  EXPECT_EQ(report.kernels,
            c.kernels == "amx-bf16" && c.tokens > 16 ? "amx-bf16-staged" : c.kernels);

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
  for (const std::string name : {"avx512bf16", "amx-bf16"}) {  // with AMX: both AMX kernels
    for (int64_t tokens : {1, 3, 16, 64, 257}) {
      // Odd widths and d_model not a multiple of 16 or 32; one shape large enough for every block.
      for (auto [d, h] : {std::pair<int64_t, int64_t>{100, 200}, {203, 701}, {35, 33}}) {
        cases.push_back({name, d, h, tokens, 1});
      }
    }
    for (int64_t tokens : {16, 257}) cases.push_back({name, 203, 701, tokens, 2});
    // The staged AMX kernel in one pass (up to 32 tokens) and in two.
    for (int64_t tokens : {21, 40}) cases.push_back({name, 203, 701, tokens, 1});
    cases.push_back({name, 1000, 300, 70, 2});
  }
  // Int8 weights on the staged AMX kernel (from kInt8StagedMinTokens), the reference on the
  // dequantised weights: the same bound, the weights being exact.
  for (int64_t tokens : {16, 21, 40, 64, 257}) {
    for (auto [d, h] : {std::pair<int64_t, int64_t>{100, 200}, {203, 701}, {35, 33}}) {
      cases.push_back({"amx-bf16-staged", d, h, tokens, 1, WeightStorage::kInt8});
    }
  }
  for (int64_t tokens : {16, 257}) {
    cases.push_back({"amx-bf16-staged", 203, 701, tokens, 2, WeightStorage::kInt8});
  }
  cases.push_back({"amx-bf16-staged", 1000, 300, 70, 2, WeightStorage::kInt8});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shapes, SwigluBf16DotTest, ::testing::ValuesIn(FfnCases()),
                         [](const ::testing::TestParamInfo<FfnCase>& info) {
                           const FfnCase& c = info.param;
                           return absl::StrCat(c.storage == WeightStorage::kInt8 ? "int8_" : "",
                                               Identifier(c.kernels), "_d", c.d_model, "_h",
                                               c.width, "_M", c.tokens, "_threads", c.threads);
                         });

}  // namespace
}  // namespace moe
