// The row-dot kernels, AVX-512, AVX2 and portable builds, against loops in double; and the packed
// Bf16Matrix layout they read.
#include "common/kernels/row_dot_kernel.h"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/kernels/swiglu_ffn.h"
#include "common/kernels/swiglu_weights.h"
#include "common/tensor/bf16_matrix.h"
#include "common/tensor/dtype.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

// The AVX-512 and AVX2 sets twice each: one and four weight streams per one-token dot.
std::vector<const RowDotKernels*> AllKernels() {
  std::vector<const RowDotKernels*> all = {&PortableRowDotKernels()};
  for (int streams : kOneTokenStreamChoices) {
    for (const RowDotKernels* set : {Avx512RowDotKernels(streams), Avx2RowDotKernels(streams)}) {
      if (set != nullptr) all.push_back(set);
    }
  }
  return all;
}

std::string NameOf(const RowDotKernels& set) {
  return absl::StrCat(set.name, " (", set.one_token_streams, " one-token streams)");
}

Matrix RandomMatrix(int64_t rows, int64_t cols, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  Matrix m(rows, cols);
  for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = dist(rng);
  return m;
}

// x rows at stride ldx, zero past k (what the BF16 dots require).
std::vector<float> PaddedTokens(int64_t tokens, int64_t k, int64_t ldx, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> x(tokens * ldx, 0.0f);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < k; ++i) x[t * ldx + i] = dist(rng);
  }
  return x;
}

// |got − Σ w·x| within float32 rounding of a k-term sum of products of magnitude ≤ 1.
void ExpectDots(const Matrix& w, const std::vector<float>& x, int64_t ldx, int64_t tokens,
                const std::vector<float>& out, int64_t ldo, const std::string& what) {
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t r = 0; r < w.rows(); ++r) {
      double want = 0;
      for (int64_t i = 0; i < w.cols(); ++i) want += double(w.row(r)[i]) * x[t * ldx + i];
      ASSERT_NEAR(out[t * ldo + r], want, 1e-6 * w.cols())
          << what << " row " << r << " token " << t;
    }
  }
}

TEST(RowDotKernelTest, Avx512IsAvailableOnAvx512Machines) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw")) {
    GTEST_SKIP() << "no AVX-512 here; only the portable kernels run";
  }
  ASSERT_NE(Avx512RowDotKernels(), nullptr);
  EXPECT_EQ(std::string(BestRowDotKernels().name), "avx512");
  EXPECT_EQ(std::string(BestRowDotKernels(/*allow_avx512=*/false).name), "avx2");
}

TEST(RowDotKernelTest, Avx2IsTheFallbackBelowAvx512AndPortableBelowThat) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    GTEST_SKIP() << "no AVX2 here; only the portable kernels run";
  }
  ASSERT_NE(Avx2RowDotKernels(), nullptr);
  if (Avx512RowDotKernels() == nullptr) {
    EXPECT_EQ(std::string(BestRowDotKernels().name), "avx2");
  }
  EXPECT_EQ(std::string(BestRowDotKernels(/*allow_avx512=*/false).name), "avx2");
  ASSERT_NE(Avx2Int16RowDotKernels(), nullptr);
  const RowDotKernels& int16 = BestRowDotKernels(/*allow_avx512=*/false, /*allow_int16_dots=*/true);
  EXPECT_EQ(std::string(int16.name), "avx2-int16");
  EXPECT_NE(int16.quantize_activations, nullptr);
  EXPECT_NE(int16.dots_int8_quantized, nullptr);
  EXPECT_EQ(Avx2RowDotKernels()->quantize_activations, nullptr);
  EXPECT_EQ(std::string(BestRowDotKernels(/*allow_avx512=*/false, /*allow_int16_dots=*/true,
                                          /*allow_avx2=*/false)
                            .name),
            "portable");
}

TEST(RowDotKernelTest, DotsMatchDoubleForAllShapesAroundTileEdges) {
  std::mt19937 rng(7);
  for (const RowDotKernels* kernels : AllKernels()) {
    for (int64_t rows : {1, 3, 4, 5, 9}) {
      for (int64_t k : {1, 7, 8, 9, 15, 16, 17, 64, 100, 147}) {
        for (int64_t tokens : {1, 2, 3, 4, 5, 6, 7, 8, 9, 13}) {
          const std::string what =
              absl::StrCat(NameOf(*kernels), " rows ", rows, " k ", k, " tokens ", tokens);
          const Matrix w = RandomMatrix(rows, k, rng);
          const int64_t ldx = k + 19, ldo = rows + 3;
          // F32: weights as they are, with a row stride larger than k.
          const std::vector<float> x = PaddedTokens(tokens, k, ldx, rng);
          Matrix strided(rows, k + 5);
          for (int64_t r = 0; r < rows; ++r) std::copy(w.row(r), w.row(r) + k, strided.row(r));
          std::vector<float> out(tokens * ldo, -1.0f);
          kernels->dots_f32(strided.data(), k + 5, rows, k, x.data(), ldx, tokens, out.data(), ldo);
          ExpectDots(w, x, ldx, tokens, out, ldo, what + " f32");
          // BF16: the same weights rounded, read from the packed layout.
          const Bf16Matrix packed = Bf16Matrix::RoundFrom(w);
          std::vector<float> xb = PaddedTokens(tokens, k, packed.padded_cols() + 16, rng);
          std::fill(out.begin(), out.end(), -1.0f);
          kernels->dots_bf16(packed.quad(0), rows, packed.padded_cols(), xb.data(),
                             packed.padded_cols() + 16, tokens, out.data(), ldo);
          ExpectDots(packed.ToF32(), xb, packed.padded_cols() + 16, tokens, out, ldo,
                     what + " bf16");
        }
      }
    }
  }
}

// One to thirteen tokens over more rows than a four-stream dot takes at once (float32: 4 parts
// at 1-12 tokens, in passes of at most 5 tokens from 6, the four-row tile at 13; BF16 quads: 4
// parts at one token, 2 at two or three, one at a time past that), with the rest one by one: every
// row's sum, none missing, none written twice or past the end.
TEST(RowDotKernelTest, FewTokenDotsMatchDoubleWhateverTheStreamsTake) {
  std::mt19937 rng(11);
  for (const RowDotKernels* kernels : AllKernels()) {
    for (int64_t rows : {15, 16, 17, 21, 36, 67}) {
      for (int64_t k : {16, 100, 147}) {
        for (int64_t tokens : {1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13}) {
          const std::string what =
              absl::StrCat(NameOf(*kernels), " rows ", rows, " k ", k, " tokens ", tokens);
          const int64_t ldo = rows + 1;
          const Matrix w = RandomMatrix(rows, k, rng);
          const std::vector<float> x = PaddedTokens(tokens, k, k, rng);
          std::vector<float> out(tokens * ldo, -1.0f);
          kernels->dots_f32(w.data(), k, rows, k, x.data(), k, tokens, out.data(), ldo);
          ExpectDots(w, x, k, tokens, out, ldo, what + " f32");
          for (int64_t t = 0; t < tokens; ++t) {
            EXPECT_EQ(out[t * ldo + rows], -1.0f) << what << " f32 wrote past the last row";
          }
          const Bf16Matrix packed = Bf16Matrix::RoundFrom(w);
          const int64_t ldx = packed.padded_cols();
          const std::vector<float> xb = PaddedTokens(tokens, k, ldx, rng);
          std::fill(out.begin(), out.end(), -1.0f);
          kernels->dots_bf16(packed.quad(0), rows, ldx, xb.data(), ldx, tokens, out.data(), ldo);
          ExpectDots(packed.ToF32(), xb, ldx, tokens, out, ldo, what + " bf16");
          for (int64_t t = 0; t < tokens; ++t) {
            EXPECT_EQ(out[t * ldo + rows], -1.0f) << what << " bf16 wrote past the last row";
          }
        }
      }
    }
  }
}

// The CPUs the default was measured on (README "One token: weight streams per thread"), as CPUID
// describes them: one stream on Zen 4 cores only, whether or not the hypervisor shows AVX-512.
TEST(RowDotKernelTest, OneStreamByDefaultOnZen4CoresOnly) {
  struct Case {
    const char* cpu;
    CpuIdentity id;
    int streams;
  };
  const Case cases[] = {
      {"Zen 4 EPYC (Genoa), AVX-512 shown", {true, 25, 0x11, true}, 1},
      {"Zen 4 EPYC (Genoa), AVX-512 hidden by the hypervisor", {true, 25, 0x11, false}, 1},
      {"Zen 4 Ryzen 7000 (Raphael)", {true, 25, 0x61, true}, 1},
      {"Zen 4c EPYC (Bergamo)", {true, 25, 0xa0, true}, 1},
      {"Zen 3 EPYC (Milan)", {true, 25, 0x01, false}, 4},
      {"Zen 3 Ryzen 5000 (Vermeer)", {true, 25, 0x21, false}, 4},
      {"Zen 5 EPYC (Turin)", {true, 26, 0x02, true}, 4},
      {"Zen 2 EPYC (Rome)", {true, 23, 0x31, false}, 4},
      {"Intel Xeon (Sapphire Rapids)", {false, 6, 0x8f, true}, 4},
      {"Intel Xeon (Emerald Rapids), family 6 model 207", {false, 6, 0xcf, true}, 4},
  };
  for (const Case& c : cases) EXPECT_EQ(DefaultOneTokenStreams(c.id), c.streams) << c.cpu;
}

// ThisCpu reads what the kernel reports in /proc/cpuinfo (Linux x86-64).
TEST(RowDotKernelTest, ThisCpuMatchesProcCpuinfo) {
  std::ifstream cpuinfo("/proc/cpuinfo");
  if (!cpuinfo) GTEST_SKIP() << "no /proc/cpuinfo here";
  std::map<std::string, std::string> fields;
  for (std::string line; std::getline(cpuinfo, line) && !line.empty();) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    key.erase(key.find_last_not_of(" \t") + 1);
    fields[key] = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
  }
  const CpuIdentity cpu = ThisCpu();
  EXPECT_EQ(cpu.amd, fields["vendor_id"] == "AuthenticAMD");
  EXPECT_EQ(std::to_string(cpu.family), fields["cpu family"]);
  EXPECT_EQ(std::to_string(cpu.model), fields["model"]);
  EXPECT_EQ(cpu.avx512f, (" " + fields["flags"] + " ").find(" avx512f ") != std::string::npos);
}

// Unset, MOE_ONE_TOKEN_STREAMS leaves the choice to the CPU (DefaultOneTokenStreams); the
// process's sets (BestRowDotKernels) read that many. ctest also runs this with the variable set to
// 1, 4 and 3 (not a choice: an error naming the variable; tests/CMakeLists.txt).
TEST(RowDotKernelTest, OneTokenStreamsFollowTheEnvironmentOrTheCpu) {
  const char* env = std::getenv("MOE_ONE_TOKEN_STREAMS");
  const absl::StatusOr<int> streams = OneTokenStreamsFromEnv();
  if (env == nullptr) {
    ASSERT_TRUE(streams.ok()) << streams.status();
    EXPECT_EQ(*streams, DefaultOneTokenStreams(ThisCpu()));
  } else if (std::string(env) == "1" || std::string(env) == "4") {
    ASSERT_TRUE(streams.ok()) << streams.status();
    EXPECT_EQ(*streams, std::stoi(env));
  } else {
    EXPECT_EQ(streams.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(streams.status().message().find("MOE_ONE_TOKEN_STREAMS"), std::string::npos)
        << streams.status();
    // A shard's startup line and every FFN call fail with it, not run some other choice.
    EXPECT_EQ(SwigluKernelSummary(WeightStorage::kF32).status().code(),
              absl::StatusCode::kInvalidArgument);
    const SwigluWeights w =
        *SwigluWeights::FromF32(Matrix(4, 16), Matrix(4, 16), Matrix(16, 4), WeightStorage::kF32);
    Matrix y(1, 16);
    EXPECT_EQ(SwigluForward(w, Matrix(1, 16), y.view()).code(), absl::StatusCode::kInvalidArgument);
    return;
  }
  if (Avx2RowDotKernels() == nullptr) GTEST_SKIP() << "no AVX2 here: one stream, no choice";
  EXPECT_EQ(BestRowDotKernels().one_token_streams, *streams);
  EXPECT_EQ(BestRowDotKernels(/*allow_avx512=*/false).one_token_streams, *streams);
  EXPECT_EQ(BestRowDotKernels(false, /*allow_int16_dots=*/true).one_token_streams, *streams);
  EXPECT_EQ(Avx512RowDotKernels(3), nullptr);
  EXPECT_EQ(Avx2RowDotKernels(3), nullptr);
  EXPECT_EQ(Avx2Int16RowDotKernels(3), nullptr);
  const absl::StatusOr<std::string> summary = SwigluKernelSummary(WeightStorage::kF32);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->find("4 weight streams per thread") != std::string::npos, *streams == 4)
      << *summary;
}

TEST(RowDotKernelTest, SiluMulMatchesDoubleIncludingSaturation) {
  std::vector<float> gate = {-100.0f, -88.0f, -30.0f, -5.0f, -1.0f, -1e-3f, -0.0f, 0.0f,
                             1e-3f,   0.5f,   1.0f,   5.0f,  20.0f, 88.0f,  100.0f};
  std::mt19937 rng(8);
  std::uniform_real_distribution<float> dist(-12.0f, 12.0f);
  for (int i = 0; i < 50; ++i) gate.push_back(dist(rng));  // 65 values: a masked tail too
  std::vector<float> up(gate.size());
  for (size_t i = 0; i < up.size(); ++i) up[i] = 0.5f + 0.01f * i;
  for (const RowDotKernels* kernels : AllKernels()) {
    std::vector<float> act(gate.size());
    kernels->silu_mul(gate.data(), up.data(), act.data(), static_cast<int64_t>(gate.size()));
    for (size_t i = 0; i < gate.size(); ++i) {
      const double g = gate[i];
      const double want = g / (1.0 + std::exp(-g)) * up[i];
      EXPECT_NEAR(act[i], want, 2e-7 * std::abs(want) + 1e-30)
          << kernels->name << " gate " << gate[i];
    }
  }
}

TEST(RowDotKernelTest, UnpackGivesTheExactRowMajorValues) {
  std::mt19937 rng(9);
  for (const RowDotKernels* kernels : AllKernels()) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {5, 17}, {8, 32}, {7, 100}}) {
      const Bf16Matrix packed = Bf16Matrix::RoundFrom(RandomMatrix(rows, cols, rng));
      const Matrix want = packed.ToF32();
      std::vector<float> out(rows * (cols + 2), -7.0f);
      kernels->unpack_bf16(packed.quad(0), rows, packed.padded_cols(), cols, out.data(), cols + 2);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          ASSERT_EQ(out[r * (cols + 2) + c], want.row(r)[c]) << kernels->name << r << "," << c;
        }
        EXPECT_EQ(out[r * (cols + 2) + cols], -7.0f) << "wrote past the row";
      }
    }
  }
}

TEST(Bf16MatrixTest, KeepsRowMajorBitsExactlyWhateverTheShape) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {3, 15}, {4, 16}, {9, 33}}) {
    std::vector<uint16_t> bits(rows * cols);
    for (size_t i = 0; i < bits.size(); ++i) bits[i] = static_cast<uint16_t>(0x3f00 + 37 * i);
    const Bf16Matrix m(rows, cols, bits);
    ASSERT_EQ(m.rows(), rows);
    ASSERT_EQ(m.cols(), cols);
    EXPECT_EQ(m.padded_cols() % Bf16Matrix::kChunkCols, 0);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        ASSERT_EQ(m.bits(r, c), bits[r * cols + c]) << r << "," << c;
        ASSERT_EQ(m.at(r, c), Bf16ToF32(bits[r * cols + c]));
      }
    }
  }
}

TEST(Bf16MatrixTest, RoundFromRoundsEachValueToNearestEven) {
  Matrix values(2, 3,
                {1.0f, 1.0f + 1.0f / 256, 1.0f + 3.0f / 256, -2.5f,
                 std::numeric_limits<float>::infinity(), 3e38f});
  const Bf16Matrix m = Bf16Matrix::RoundFrom(values);
  for (int64_t r = 0; r < 2; ++r) {
    for (int64_t c = 0; c < 3; ++c) EXPECT_EQ(m.bits(r, c), F32ToBf16(values.row(r)[c]));
  }
}

}  // namespace
}  // namespace moe
