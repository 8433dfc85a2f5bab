// SwigluForward on every path (streaming, BLAS, chosen by token count), ISA (AVX-512, AVX2,
// portable) and storage (F32, BF16) against a triple-loop reference in double
// (tests/swiglu_test_util.h), the path each call reports taking, and the weights' factories.
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
#include "tests/swiglu_test_util.h"

namespace moe {
namespace {

// The streaming kernels a case allows: the best this CPU has, AVX2 at most, or portable C++.
enum class Isa { kAvx512, kAvx2, kPortable };

const char* IsaName(Isa isa) {
  return isa == Isa::kAvx512 ? "avx512" : isa == Isa::kAvx2 ? "avx2" : "portable";
}

// The kernels `isa` names, or nullptr when this CPU cannot run them.
const RowDotKernels* IsaKernels(Isa isa) {
  return isa == Isa::kAvx512 ? Avx512RowDotKernels()
         : isa == Isa::kAvx2 ? Avx2RowDotKernels()
                             : &PortableRowDotKernels();
}

void AllowOnly(Isa isa, SwigluOptions& options) {
  options.allow_avx512 = isa == Isa::kAvx512;
  options.allow_avx2 = isa != Isa::kPortable;
}

int64_t SwitchPoint(WeightStorage storage, Isa isa) {
  return SwigluBlasMinTokens(storage, isa == Isa::kAvx512, isa != Isa::kPortable);
}

struct PathCase {
  SwigluPath path;
  WeightStorage storage;
  Isa isa;
  int64_t d_model;
  int64_t width;
  int64_t tokens;
};

std::string CaseName(const ::testing::TestParamInfo<PathCase>& info) {
  const PathCase& c = info.param;
  const char* path = c.path == SwigluPath::kAuto        ? "Auto"
                     : c.path == SwigluPath::kStreaming ? "Streaming"
                                                        : "Blas";
  return absl::StrCat(path, c.storage == WeightStorage::kBF16 ? "Bf16" : "F32", "_", IsaName(c.isa),
                      "_d", c.d_model, "_h", c.width, "_M", c.tokens);
}

std::vector<PathCase> AllCases() {
  std::vector<PathCase> cases;
  for (SwigluPath path : {SwigluPath::kAuto, SwigluPath::kStreaming, SwigluPath::kBlas}) {
    for (WeightStorage storage : {WeightStorage::kF32, WeightStorage::kBF16}) {
      for (Isa isa : {Isa::kAvx512, Isa::kAvx2, Isa::kPortable}) {
        std::vector<int64_t> tokens = {1, 2, 3, 7, 8, 9, 15, 16, 17, 64, 257};
        // Around the switch point in effect (none when BLAS never wins: AVX-512 vs AVX2 BLAS).
        const int64_t s = SwitchPoint(storage, isa);
        if (s < 1000) tokens.insert(tokens.end(), {s - 1, s, s + 1});
        std::sort(tokens.begin(), tokens.end());
        tokens.erase(std::unique(tokens.begin(), tokens.end()), tokens.end());
        // Odd sizes (not multiples of 16 or 4), one too small and one large enough for the pool.
        for (auto [d, h] : {std::pair<int64_t, int64_t>{100, 200}, {203, 701}}) {
          for (int64_t m : tokens) cases.push_back({path, storage, isa, d, h, m});
        }
      }
    }
  }
  return cases;
}

class SwigluPathTest : public ::testing::TestWithParam<PathCase> {};

TEST_P(SwigluPathTest, MatchesTripleLoopReferenceInDouble) {
  const PathCase& c = GetParam();
  if (IsaKernels(c.isa) == nullptr) GTEST_SKIP() << "this CPU cannot run " << IsaName(c.isa);
  std::mt19937 rng(static_cast<unsigned>(1000 + c.tokens + c.d_model));
  const SwigluWeights w = RandomWeights(c.d_model, c.width, rng, c.storage);
  ASSERT_EQ(w.d_model(), c.d_model);
  ASSERT_EQ(w.width(), c.width);
  const Matrix x = RandomMatrix(c.tokens, c.d_model, 1.0f, rng);
  Matrix y(c.tokens, c.d_model);
  std::fill(y.data(), y.data() + y.size(), 1e6f);  // must be overwritten

  SwigluOptions options;
  options.path = c.path;
  AllowOnly(c.isa, options);
  options.allow_avx512_bf16 = false;  // float32 activations; bf16 ones: swiglu_bf16_path_test
  SwigluReport report;
  options.report = &report;
  ASSERT_TRUE(SwigluForward(w, x, y.view(), options).ok());

  ExpectMatches(y, ReferenceSwiglu(Widened(w), x), CaseName({c, 0}));
  if (c.path != SwigluPath::kAuto) {
    EXPECT_EQ(report.path, c.path);
  }
  EXPECT_STREQ(report.kernels, IsaName(c.isa));
}

INSTANTIATE_TEST_SUITE_P(AllPaths, SwigluPathTest, ::testing::ValuesIn(AllCases()), CaseName);

// SwigluOptions::one_token_streams picks the one-token dots' streams per call, whatever the
// process's (MOE_ONE_TOKEN_STREAMS); both match the reference, and any other count fails.
TEST(SwigluFfnTest, OneTokenStreamsOptionPicksTheDotsPerCall) {
  std::mt19937 rng(5);
  for (WeightStorage storage : {WeightStorage::kF32, WeightStorage::kBF16, WeightStorage::kInt8}) {
    const SwigluWeights w = RandomWeights(203, 701, rng, storage);
    const Matrix x = RandomMatrix(1, 203, 1.0f, rng);
    const std::vector<double> want = ReferenceSwiglu(Widened(w), x);
    // int8 weights: against their own values widened, but on activations rounded to int16
    // (~1/33 000 of each token's largest value: row_dot_kernel.h).
    const double tolerance = storage == WeightStorage::kInt8 ? 1e-4 : kSwigluTolerance;
    for (Isa isa : {Isa::kAvx512, Isa::kAvx2}) {
      if (IsaKernels(isa) == nullptr) continue;
      for (int streams : kOneTokenStreamChoices) {
        const std::string what = absl::StrCat(IsaName(isa), " storage ", static_cast<int>(storage),
                                              ", ", streams, " streams");
        Matrix y(1, 203);
        SwigluOptions options;
        AllowOnly(isa, options);
        options.allow_avx512_bf16 = false;
        options.one_token_streams = streams;
        SwigluReport report;
        options.report = &report;
        ASSERT_TRUE(SwigluForward(w, x, y.view(), options).ok()) << what;
        EXPECT_EQ(report.one_token_streams, streams) << what;
        ExpectMatches(y, want, what, tolerance);
      }
    }
    for (int streams : {-1, 2, 3, 8}) {
      Matrix y(1, 203);
      SwigluOptions options;
      options.one_token_streams = streams;
      const absl::Status status = SwigluForward(w, x, y.view(), options);
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << streams;
      EXPECT_NE(status.message().find("one_token_streams"), std::string::npos) << status;
    }
  }
}

// The path a call takes, as the kernel reports it. The portable kernel loses to OpenBLAS from 16
// tokens on (kSwitchPortable), the AVX2 one from kSwitchAvx2; with AVX-512, the switch point
// depends on OpenBLAS's kernels, so those cases check the point in effect from both sides.
SwigluPath PathTaken(const SwigluWeights& w, int64_t tokens, Isa isa) {
  std::mt19937 rng(static_cast<unsigned>(tokens));
  const Matrix x = RandomMatrix(tokens, w.d_model(), 1.0f, rng);
  Matrix y(tokens, w.d_model());
  SwigluReport report;
  SwigluOptions options;
  AllowOnly(isa, options);
  options.allow_avx512_bf16 = false;  // the bf16-activation switch: swiglu_bf16_dispatch_test
  options.report = &report;
  EXPECT_TRUE(SwigluForward(w, x, y.view(), options).ok());
  return report.path;
}

TEST(SwigluFfnTest, PortableKernelsHandOverToBlasAtSixteenTokens) {
  std::mt19937 rng(2);
  for (WeightStorage storage : {WeightStorage::kF32, WeightStorage::kBF16}) {
    const SwigluWeights w = RandomWeights(48, 64, rng, storage);
    EXPECT_EQ(PathTaken(w, 1, Isa::kPortable), SwigluPath::kStreaming);
    EXPECT_EQ(PathTaken(w, 15, Isa::kPortable), SwigluPath::kStreaming);
    EXPECT_EQ(PathTaken(w, 16, Isa::kPortable), SwigluPath::kBlas);
    EXPECT_EQ(PathTaken(w, 300, Isa::kPortable), SwigluPath::kBlas);
  }
}

TEST(SwigluFfnTest, Avx2KernelsHandOverToBlasAtTheirSwitchPoint) {
  if (Avx2RowDotKernels() == nullptr) GTEST_SKIP() << "this CPU has no AVX2";
  std::mt19937 rng(2);
  for (WeightStorage storage : {WeightStorage::kF32, WeightStorage::kBF16}) {
    const SwigluWeights w = RandomWeights(48, 64, rng, storage);
    const int64_t s = SwitchPoint(storage, Isa::kAvx2);
    EXPECT_EQ(s, storage == WeightStorage::kF32 ? kSwitchAvx2.f32 : kSwitchAvx2.bf16);
    EXPECT_EQ(PathTaken(w, 1, Isa::kAvx2), SwigluPath::kStreaming);
    EXPECT_EQ(PathTaken(w, s - 1, Isa::kAvx2), SwigluPath::kStreaming);
    EXPECT_EQ(PathTaken(w, s, Isa::kAvx2), SwigluPath::kBlas);
  }
}

TEST(SwigluFfnTest, Avx512KernelsStreamFewTokensAndHandOverAtTheSwitchPointInEffect) {
  if (Avx512RowDotKernels() == nullptr) GTEST_SKIP() << "this CPU has no AVX-512";
  std::mt19937 rng(2);
  for (WeightStorage storage : {WeightStorage::kF32, WeightStorage::kBF16, WeightStorage::kInt8}) {
    const SwigluWeights w = RandomWeights(48, 64, rng, storage);
    EXPECT_EQ(PathTaken(w, 1, Isa::kAvx512), SwigluPath::kStreaming);
    EXPECT_EQ(PathTaken(w, 64, Isa::kAvx512),
              SwigluPath::kStreaming);  // below every AVX-512 switch point
    const int64_t s = SwigluBlasMinTokens(storage);
    if (s == kSwigluNeverBlas) {
      EXPECT_EQ(PathTaken(w, 1024, Isa::kAvx512), SwigluPath::kStreaming);
    } else {
      EXPECT_EQ(PathTaken(w, s - 1, Isa::kAvx512), SwigluPath::kStreaming);
      EXPECT_EQ(PathTaken(w, s, Isa::kAvx512), SwigluPath::kBlas);
    }
  }
}

// Int8 weights on the AVX-512 or AVX2 kernels never go to OpenBLAS, whose sgemm would run on
// dequantised copies (bench/README.md: slower up to 1024 tokens); on the portable ones they do.
TEST(SwigluFfnTest, SimdKernelsStreamInt8WeightsAtEveryTokenCount) {
  std::mt19937 rng(2);
  const SwigluWeights w = RandomWeights(48, 64, rng, WeightStorage::kInt8);
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2}) {
    if (IsaKernels(isa) == nullptr) continue;
    SCOPED_TRACE(IsaName(isa));
    EXPECT_EQ(SwitchPoint(WeightStorage::kInt8, isa), kSwigluNeverBlas);
    EXPECT_EQ(PathTaken(w, 1024, isa), SwigluPath::kStreaming);
  }
  EXPECT_EQ(SwitchPoint(WeightStorage::kInt8, Isa::kPortable), kSwitchPortable.int8);
  EXPECT_EQ(PathTaken(w, kSwitchPortable.int8, Isa::kPortable), SwigluPath::kBlas);
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
  // More callers than cores on one pool: whoever finds the helpers busy runs alone.
  std::mt19937 rng(21);
  const SwigluWeights f32 = RandomWeights(203, 701, rng);
  const SwigluWeights bf16 = RandomWeights(203, 701, rng, WeightStorage::kBF16);
  KernelThreadPool pool(2);
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
      options.pool = &pool;
      options.path = c % 3 == 2 ? SwigluPath::kBlas : SwigluPath::kAuto;
      options.allow_avx512_bf16 = false;  // within the float32 paths' tolerance
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
  const SwigluWeights w = RandomWeights(203, 701, rng, WeightStorage::kBF16);
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
  auto w = SwigluWeights::FromF32(gate, Matrix(1, 2), Matrix(2, 1), WeightStorage::kBF16);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->storage(), WeightStorage::kBF16);
  EXPECT_EQ(w->f32(), nullptr);
  ASSERT_NE(w->bf16(), nullptr);
  EXPECT_EQ(w->bf16()->gate.at(0, 0), 1.0f);
  EXPECT_EQ(w->bf16()->gate.at(0, 1), 1.0f + 4.0f / 256);
  EXPECT_EQ(w->bytes(), 3 * w->bf16()->gate.bytes());
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

TEST(SwigluFfnTest, FactoriesRefuseInconsistentShapes) {
  std::mt19937 rng(6);
  auto code = [](const absl::StatusOr<SwigluWeights>& w) { return w.status().code(); };
  const Matrix gate = RandomMatrix(160, 96, 1, rng), up = RandomMatrix(160, 96, 1, rng);
  EXPECT_EQ(code(SwigluWeights::FromF32(gate, RandomMatrix(159, 96, 1, rng),
                                        RandomMatrix(96, 160, 1, rng))),
            absl::StatusCode::kInvalidArgument);
  // down transposed by mistake, for either storage
  for (WeightStorage storage : {WeightStorage::kF32, WeightStorage::kBF16}) {
    EXPECT_EQ(code(SwigluWeights::FromF32(gate, up, RandomMatrix(160, 96, 1, rng), storage)),
              absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(code(SwigluWeights::FromBf16(Bf16Matrix::RoundFrom(gate), Bf16Matrix::RoundFrom(up),
                                         Bf16Matrix::RoundFrom(RandomMatrix(160, 96, 1, rng)))),
            absl::StatusCode::kInvalidArgument);
  auto ok = SwigluWeights::FromF32(gate, up, RandomMatrix(96, 160, 1, rng));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->d_model(), 96);
  EXPECT_EQ(ok->width(), 160);
}

class LoadExpertStorageTest : public ::testing::TestWithParam<DType> {};

// kBF16 storage of an F32 checkpoint rounds each weight; of a BF16 checkpoint keeps its bits (the
// F32 load of a BF16 checkpoint is exact, so rounding that back must give the same bits). The
// checkpoint's file dtype (DType) and the storage (WeightStorage) are independent.
TEST_P(LoadExpertStorageTest, Bf16StorageHoldsTheRoundedCheckpointWeights) {
  SyntheticModelOptions options;
  options.dtype = GetParam();
  auto loader = LayerLoader::Open(testing::WriteTestModel("tiny", options), 0);
  ASSERT_TRUE(loader.ok()) << loader.status();
  auto f32 = (*loader)->LoadExpert(3);
  auto bf16 = (*loader)->LoadExpert(3, WeightStorage::kBF16);
  ASSERT_TRUE(f32.ok() && bf16.ok()) << bf16.status();
  ASSERT_EQ(f32->storage(), WeightStorage::kF32);
  ASSERT_EQ(bf16->storage(), WeightStorage::kBF16);
  ASSERT_EQ(bf16->d_model(), f32->d_model());
  ASSERT_EQ(bf16->width(), f32->width());
  const SwigluWeights::F32& wide = *f32->f32();
  const SwigluWeights::Bf16& narrow = *bf16->bf16();
  for (int64_t j = 0; j < f32->width(); ++j) {
    for (int64_t i = 0; i < f32->d_model(); ++i) {
      ASSERT_EQ(narrow.gate.bits(j, i), F32ToBf16(wide.gate.row(j)[i])) << j << "," << i;
      ASSERT_EQ(narrow.up.bits(j, i), F32ToBf16(wide.up.row(j)[i])) << j << "," << i;
      ASSERT_EQ(narrow.down.bits(i, j), F32ToBf16(wide.down.row(i)[j])) << i << "," << j;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(CheckpointDtypes, LoadExpertStorageTest,
                         ::testing::Values(DType::kF32, DType::kBF16),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

}  // namespace
}  // namespace moe
