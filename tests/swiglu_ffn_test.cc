// SwigluForward on every path (streaming, BLAS, chosen by token count), ISA (AVX-512, portable) and
// storage (F32, BF16) against a triple-loop reference in double.
//
// Tolerance: for every token t, max_i |y[t][i] − ref[t][i]| ≤ 1e-5 · ‖ref[t]‖₂. For BF16 storage
// the reference uses the bf16-rounded weights (widened exactly), so the same bound applies: the
// kernels only add float32 rounding of the sums.
#include "common/kernels/swiglu_ffn.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/checkpoint/layer_loader.h"
#include "common/kernels/blas_kernels.h"
#include "common/kernels/row_dot_kernel.h"
#include "common/kernels/thread_pool.h"
#include "common/tensor/matrix.h"
#include "gtest/gtest.h"
#include "testing/test_models.h"

namespace moe {
namespace {

constexpr double kTolerance = 1e-5;

Matrix RandomMatrix(int64_t rows, int64_t cols, float scale, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  Matrix m(rows, cols);
  for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = scale * dist(rng);
  return m;
}

SwigluWeights RandomWeights(int64_t d_model, int64_t width, std::mt19937& rng,
                            DType storage = DType::kF32) {
  const float in_scale = 1.0f / std::sqrt(static_cast<float>(d_model));
  const float hidden_scale = 1.0f / std::sqrt(static_cast<float>(width));
  auto w = SwigluWeights::FromF32(RandomMatrix(width, d_model, in_scale, rng),
                                  RandomMatrix(width, d_model, in_scale, rng),
                                  RandomMatrix(d_model, width, hidden_scale, rng), storage);
  EXPECT_TRUE(w.ok()) << w.status();
  return *std::move(w);
}

// The weights' exact float32 values, whatever the storage.
struct F32Weights {
  Matrix gate, up, down;
};
F32Weights Widened(const SwigluWeights& w) {
  if (w.storage == DType::kF32) return {w.gate, w.up, w.down};
  return {w.gate_bf16.ToF32(), w.up_bf16.ToF32(), w.down_bf16.ToF32()};
}

// y = down( silu(gate·x) ⊙ (up·x) ) with plain loops in double.
std::vector<double> ReferenceSwiglu(const F32Weights& w, const Matrix& x) {
  const int64_t d = w.gate.cols(), h = w.gate.rows();
  std::vector<double> y(x.rows() * d, 0.0);
  std::vector<double> hidden(h);
  for (int64_t t = 0; t < x.rows(); ++t) {
    for (int64_t j = 0; j < h; ++j) {
      double g = 0, u = 0;
      for (int64_t i = 0; i < d; ++i) {
        g += static_cast<double>(w.gate.row(j)[i]) * x.row(t)[i];
        u += static_cast<double>(w.up.row(j)[i]) * x.row(t)[i];
      }
      hidden[j] = g / (1.0 + std::exp(-g)) * u;
    }
    for (int64_t o = 0; o < d; ++o) {
      double acc = 0;
      for (int64_t j = 0; j < h; ++j) acc += static_cast<double>(w.down.row(o)[j]) * hidden[j];
      y[t * d + o] = acc;
    }
  }
  return y;
}

// Checks the tolerance stated at the top, token by token.
void ExpectMatches(const Matrix& y, const std::vector<double>& want, const std::string& what) {
  const int64_t d = y.cols();
  for (int64_t t = 0; t < y.rows(); ++t) {
    double norm2 = 0, max_err = 0;
    for (int64_t i = 0; i < d; ++i) {
      norm2 += want[t * d + i] * want[t * d + i];
      max_err = std::max(max_err, std::abs(static_cast<double>(y.row(t)[i]) - want[t * d + i]));
    }
    ASSERT_GT(norm2, 0.0) << what;
    ASSERT_LE(max_err, kTolerance * std::sqrt(norm2)) << what << ", token " << t;
  }
}

struct PathCase {
  SwigluPath path;
  DType storage;
  bool avx512;
  int64_t d_model;
  int64_t width;
  int64_t tokens;
};

std::string CaseName(const ::testing::TestParamInfo<PathCase>& info) {
  const PathCase& c = info.param;
  const char* path = c.path == SwigluPath::kAuto        ? "Auto"
                     : c.path == SwigluPath::kStreaming ? "Streaming"
                                                        : "Blas";
  return absl::StrCat(path, c.storage == DType::kBF16 ? "Bf16" : "F32",
                      c.avx512 ? "Avx512" : "Portable", "_d", c.d_model, "_h", c.width, "_M",
                      c.tokens);
}

std::vector<PathCase> AllCases() {
  std::vector<PathCase> cases;
  for (SwigluPath path : {SwigluPath::kAuto, SwigluPath::kStreaming, SwigluPath::kBlas}) {
    for (DType storage : {DType::kF32, DType::kBF16}) {
      for (bool avx512 : {true, false}) {
        std::vector<int64_t> tokens = {1, 2, 3, 7, 8, 9, 15, 16, 17, 64, 257};
        // Around the switch point in effect (none when BLAS never wins: AVX-512 vs AVX2 BLAS).
        const int64_t s = SwigluBlasMinTokens(storage, avx512);
        if (s < 1000) tokens.insert(tokens.end(), {s - 1, s, s + 1});
        std::sort(tokens.begin(), tokens.end());
        tokens.erase(std::unique(tokens.begin(), tokens.end()), tokens.end());
        // Odd sizes (not multiples of 16 or 4), one too small and one large enough for the pool.
        for (auto [d, h] : {std::pair<int64_t, int64_t>{100, 200}, {203, 701}}) {
          for (int64_t m : tokens) cases.push_back({path, storage, avx512, d, h, m});
        }
      }
    }
  }
  return cases;
}

class SwigluPathTest : public ::testing::TestWithParam<PathCase> {};

TEST_P(SwigluPathTest, MatchesTripleLoopReferenceInDouble) {
  const PathCase& c = GetParam();
  if (c.avx512 && Avx512RowDotKernels() == nullptr) GTEST_SKIP() << "this CPU has no AVX-512";
  std::mt19937 rng(static_cast<unsigned>(1000 + c.tokens + c.d_model));
  const SwigluWeights w = RandomWeights(c.d_model, c.width, rng, c.storage);
  ASSERT_EQ(w.d_model(), c.d_model);
  ASSERT_EQ(w.width(), c.width);
  const Matrix x = RandomMatrix(c.tokens, c.d_model, 1.0f, rng);
  Matrix y(c.tokens, c.d_model);
  std::fill(y.data(), y.data() + y.size(), 1e6f);  // must be overwritten

  SwigluOptions options;
  options.path = c.path;
  options.allow_avx512 = c.avx512;
  ASSERT_TRUE(SwigluForward(w, x, y.view(), options).ok());

  ExpectMatches(y, ReferenceSwiglu(Widened(w), x), CaseName({c, 0}));
}

INSTANTIATE_TEST_SUITE_P(AllPaths, SwigluPathTest, ::testing::ValuesIn(AllCases()), CaseName);

TEST(SwigluFfnTest, SwitchPointFollowsTheKernelsInUse) {
  for (DType storage : {DType::kF32, DType::kBF16}) {
    const bool bf16 = storage == DType::kBF16;
    EXPECT_EQ(SwigluBlasMinTokens(storage, /*allow_avx512=*/false),
              bf16 ? kSwitchPortable.bf16 : kSwitchPortable.f32);
    if (Avx512RowDotKernels() == nullptr) continue;
    const SwigluSwitchPoint& want =
        BlasHasAvx512Kernels() ? kSwitchAvx512VsAvx512Blas : kSwitchAvx512VsAvx2Blas;
    EXPECT_EQ(SwigluBlasMinTokens(storage), bf16 ? want.bf16 : want.f32);
  }
}

TEST(SwigluFfnTest, EachTokenIsComputedIndependentlyOfTheBatch) {
  std::mt19937 rng(3);
  const SwigluWeights w = RandomWeights(16, 24, rng);
  const Matrix x = RandomMatrix(5, 16, 1.0f, rng);
  Matrix batch(5, 16);
  ASSERT_TRUE(SwigluForward(w, x, batch.view()).ok());
  const std::vector<double> want = ReferenceSwiglu(Widened(w), x);
  for (int64_t t = 0; t < 5; ++t) {
    Matrix one(1, 16, std::vector<float>(x.row(t), x.row(t) + 16));
    Matrix y(1, 16);
    ASSERT_TRUE(SwigluForward(w, one, y.view()).ok());
    for (int i = 0; i < 16; ++i) {
      EXPECT_NEAR(y.row(0)[i], want[t * 16 + i], 1e-5) << t << "," << i;
      EXPECT_NEAR(batch.row(t)[i], want[t * 16 + i], 1e-5) << t << "," << i;
    }
  }
}

TEST(SwigluFfnTest, ConcurrentCallersGetTheirOwnResults) {
  // More callers than cores, on the shared pool: whoever finds the helpers busy runs alone.
  std::mt19937 rng(21);
  const SwigluWeights f32 = RandomWeights(203, 701, rng);
  const SwigluWeights bf16 = RandomWeights(203, 701, rng, DType::kBF16);
  constexpr int kCallers = 6, kCalls = 4;
  std::vector<Matrix> inputs;
  std::vector<std::vector<double>> wants;
  for (int c = 0; c < kCallers; ++c) {
    inputs.push_back(RandomMatrix(1 + 7 * c, 203, 1.0f, rng));
    wants.push_back(ReferenceSwiglu(Widened(c % 2 ? bf16 : f32), inputs.back()));
  }
  std::vector<Matrix> outputs(kCallers * kCalls);
  std::vector<absl::Status> statuses(kCallers * kCalls);
  std::vector<std::thread> callers;
  for (int c = 0; c < kCallers; ++c) {
    callers.emplace_back([&, c] {
      SwigluOptions options;  // every third caller on the BLAS path
      options.path = c % 3 == 2 ? SwigluPath::kBlas : SwigluPath::kAuto;
      for (int k = 0; k < kCalls; ++k) {
        Matrix& y = outputs[c * kCalls + k];
        y = Matrix(inputs[c].rows(), 203);
        statuses[c * kCalls + k] = SwigluForward(c % 2 ? bf16 : f32, inputs[c], y.view(), options);
      }
    });
  }
  for (std::thread& t : callers) t.join();
  for (int i = 0; i < kCallers * kCalls; ++i) {
    ASSERT_TRUE(statuses[i].ok()) << statuses[i];
    ExpectMatches(outputs[i], wants[i / kCalls], absl::StrCat("caller ", i / kCalls));
  }
}

TEST(SwigluFfnTest, DedicatedPoolGivesTheSameResult) {
  std::mt19937 rng(22);
  const SwigluWeights w = RandomWeights(203, 701, rng, DType::kBF16);
  const Matrix x = RandomMatrix(5, 203, 1.0f, rng);
  KernelThreadPool pool(3);
  SwigluOptions options;
  options.pool = &pool;
  options.path = SwigluPath::kStreaming;
  Matrix y(5, 203);
  ASSERT_TRUE(SwigluForward(w, x, y.view(), options).ok());
  ExpectMatches(y, ReferenceSwiglu(Widened(w), x), "pool of 3");
}

TEST(SwigluFfnTest, Bf16StorageRoundsToNearestEven) {
  // 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to the even one (1).
  Matrix gate(1, 2, {1.0f + 1.0f / 256, 1.0f + 3.0f / 256});
  auto w = SwigluWeights::FromF32(gate, Matrix(1, 2), Matrix(2, 1), DType::kBF16);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->storage, DType::kBF16);
  EXPECT_EQ(w->gate_bf16.at(0, 0), 1.0f);
  EXPECT_EQ(w->gate_bf16.at(0, 1), 1.0f + 4.0f / 256);
  EXPECT_TRUE(w->gate.values().empty());
  EXPECT_EQ(w->bytes(), 3 * w->gate_bf16.bytes());
}

TEST(SwigluFfnTest, F16StorageIsInvalidArgument) {
  EXPECT_EQ(
      SwigluWeights::FromF32(Matrix(2, 3), Matrix(2, 3), Matrix(3, 2), DType::kF16).status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(SwigluFfnTest, InputWidthOtherThanDModelIsInvalidArgument) {
  std::mt19937 rng(4);
  const SwigluWeights w = RandomWeights(96, 160, rng);
  const Matrix x(2, 95);
  Matrix y(2, 96);
  EXPECT_EQ(SwigluForward(w, x, y.view()).code(), absl::StatusCode::kInvalidArgument);
}

TEST(SwigluFfnTest, OutputShapeOtherThanInputShapeIsInvalidArgument) {
  std::mt19937 rng(5);
  const SwigluWeights w = RandomWeights(96, 160, rng);
  const Matrix x(2, 96);
  Matrix fewer_rows(1, 96);
  EXPECT_EQ(SwigluForward(w, x, fewer_rows.view()).code(), absl::StatusCode::kInvalidArgument);
  Matrix wrong_cols(2, 160);
  EXPECT_EQ(SwigluForward(w, x, wrong_cols.view()).code(), absl::StatusCode::kInvalidArgument);
}

TEST(SwigluFfnTest, InconsistentWeightShapesAreInvalidArgument) {
  std::mt19937 rng(6);
  SwigluWeights w = RandomWeights(96, 160, rng);
  w.up = RandomMatrix(159, 96, 0.1f, rng);
  const Matrix x(2, 96);
  Matrix y(2, 96);
  EXPECT_EQ(SwigluForward(w, x, y.view()).code(), absl::StatusCode::kInvalidArgument);

  SwigluWeights w2 = RandomWeights(96, 160, rng);
  w2.down = RandomMatrix(160, 96, 0.1f, rng);  // transposed by mistake
  EXPECT_EQ(SwigluForward(w2, x, y.view()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SwigluWeights::FromF32(RandomMatrix(160, 96, 1, rng), RandomMatrix(160, 96, 1, rng),
                                   RandomMatrix(160, 96, 1, rng))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

class LoadExpertStorageTest : public ::testing::TestWithParam<DType> {};

// kBF16 storage of an F32 checkpoint rounds each weight; of a BF16 checkpoint keeps its bits (the
// F32 load of a BF16 checkpoint is exact, so rounding that back must give the same bits).
TEST_P(LoadExpertStorageTest, Bf16StorageHoldsTheRoundedCheckpointWeights) {
  SyntheticModelOptions options;
  options.dtype = GetParam();
  auto loader = LayerLoader::Open(testing::WriteTestModel("tiny", options), 0);
  ASSERT_TRUE(loader.ok()) << loader.status();
  auto f32 = (*loader)->LoadExpert(3);
  auto bf16 = (*loader)->LoadExpert(3, DType::kBF16);
  ASSERT_TRUE(f32.ok() && bf16.ok()) << bf16.status();
  EXPECT_EQ(f32->storage, DType::kF32);
  ASSERT_EQ(bf16->storage, DType::kBF16);
  ASSERT_EQ(bf16->d_model(), f32->d_model());
  ASSERT_EQ(bf16->width(), f32->width());
  for (int64_t j = 0; j < f32->width(); ++j) {
    for (int64_t i = 0; i < f32->d_model(); ++i) {
      ASSERT_EQ(bf16->gate_bf16.bits(j, i), F32ToBf16(f32->gate.row(j)[i])) << j << "," << i;
      ASSERT_EQ(bf16->up_bf16.bits(j, i), F32ToBf16(f32->up.row(j)[i])) << j << "," << i;
      ASSERT_EQ(bf16->down_bf16.bits(i, j), F32ToBf16(f32->down.row(i)[j])) << i << "," << j;
    }
  }
  EXPECT_EQ((*loader)->LoadExpert(3, DType::kF16).status().code(),
            absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(CheckpointDtypes, LoadExpertStorageTest,
                         ::testing::Values(DType::kF32, DType::kBF16),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

}  // namespace
}  // namespace moe
