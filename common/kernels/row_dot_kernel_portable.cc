// Portable build of the row-dot kernels: the reference the SIMD builds are tested against, and
// what runs on x86-64 CPUs without AVX2 and on other architectures (correct, slower).
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif

#include "absl/strings/str_cat.h"
#include "common/kernels/int8_matrix.h"
#include "common/kernels/row_dot_kernel.h"
#include "common/tensor/bf16_matrix.h"
#include "common/tensor/dtype.h"

namespace moe {
namespace {

constexpr int64_t kQuad = Bf16Matrix::kQuadRows;
constexpr int64_t kChunk = Bf16Matrix::kChunkCols;

// Row r of the quads starting at `quads` (k = padded columns), as float32 values [0, k).
void WidenPackedRow(const uint16_t* quads, int64_t r, int64_t k, float* out) {
  const uint16_t* bits = quads + (r / kQuad) * kQuad * k + (r % kQuad / 2) * 2 * kChunk + r % 2;
  for (int64_t c = 0; c < k; c += kChunk, bits += kQuad * kChunk) {
    for (int64_t l = 0; l < kChunk; ++l) out[c + l] = Bf16ToF32(bits[2 * l]);
  }
}

// Row r of the int8 quads starting at `quads` (k = padded columns), as float32 values [0, k),
// not yet scaled.
void WidenInt8Row(const int8_t* quads, int64_t r, int64_t k, float* out) {
  constexpr int64_t kInt8Quad = Int8Matrix::kQuadRows, kInt8Chunk = Int8Matrix::kChunkCols;
  const int8_t* q = quads + (r / kInt8Quad) * kInt8Quad * k + (r % kInt8Quad) * kInt8Chunk;
  for (int64_t c = 0; c < k; c += kInt8Chunk, q += kInt8Quad * kInt8Chunk) {
    for (int64_t l = 0; l < kInt8Chunk; ++l) out[c + l] = static_cast<float>(q[l]);
  }
}

// Eight partial sums per dot let the compiler vectorise with whatever SIMD the baseline has.
float Dot(const float* w, const float* x, int64_t k) {
  constexpr int kLanes = 8;
  float partial[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= k; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) partial[l] += w[i + l] * x[i + l];
  }
  for (; i < k; ++i) partial[0] += w[i] * x[i];
  float sum = 0;
  for (float p : partial) sum += p;
  return sum;
}

void DotsF32(const float* w, int64_t ldw, int64_t rows, int64_t k, const float* x, int64_t ldx,
             int64_t tokens, float* out, int64_t ldo) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t t = 0; t < tokens; ++t) out[t * ldo + r] = Dot(w + r * ldw, x + t * ldx, k);
  }
}

void DotsBf16(const uint16_t* quads, int64_t rows, int64_t k, const float* x, int64_t ldx,
              int64_t tokens, float* out, int64_t ldo) {
  std::vector<float> widened(k);
  float* row = widened.data();
  for (int64_t r = 0; r < rows; ++r) {
    WidenPackedRow(quads, r, k, row);
    for (int64_t t = 0; t < tokens; ++t) out[t * ldo + r] = Dot(row, x + t * ldx, k);
  }
}

void DotsInt8(const int8_t* quads, const float* scales, int64_t rows, int64_t k, const float* x,
              int64_t ldx, int64_t tokens, float* out, int64_t ldo) {
  std::vector<float> widened(k);
  float* row = widened.data();
  for (int64_t r = 0; r < rows; ++r) {
    WidenInt8Row(quads, r, k, row);
    for (int64_t t = 0; t < tokens; ++t) {
      out[t * ldo + r] = scales[r] * Dot(row, x + t * ldx, k);
    }
  }
}

void SiluMul(const float* gate, const float* up, float* act, int64_t n) {
  for (int64_t i = 0; i < n; ++i) act[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void UnpackBf16(const uint16_t* quads, int64_t rows, int64_t k, int64_t cols, float* out,
                int64_t ldo) {
  std::vector<float> widened(k);
  float* row = widened.data();
  for (int64_t r = 0; r < rows; ++r) {
    WidenPackedRow(quads, r, k, row);
    for (int64_t c = 0; c < cols; ++c) out[r * ldo + c] = row[c];
  }
}

void UnpackInt8(const int8_t* quads, const float* scales, int64_t rows, int64_t k, int64_t cols,
                float* out, int64_t ldo) {
  std::vector<float> widened(k);
  float* row = widened.data();
  for (int64_t r = 0; r < rows; ++r) {
    WidenInt8Row(quads, r, k, row);
    for (int64_t c = 0; c < cols; ++c) out[r * ldo + c] = scales[r] * row[c];
  }
}

}  // namespace

const RowDotKernels& PortableRowDotKernels() {
  static const RowDotKernels kernels = {"portable",  &DotsF32,  &DotsBf16,  &SiluMul,
                                        &UnpackBf16, &DotsInt8, &UnpackInt8};
  return kernels;
}

CpuIdentity ThisCpu() {
  CpuIdentity cpu;
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx)) {
    const unsigned base_family = (eax >> 8) & 0xf, base_model = (eax >> 4) & 0xf;
    cpu.family = base_family == 0xf ? base_family + ((eax >> 20) & 0xff) : base_family;
    cpu.model =
        base_family == 0xf || base_family == 6 ? ((eax >> 16) & 0xf) << 4 | base_model : base_model;
  }
  cpu.amd = __builtin_cpu_is("amd");
  cpu.avx512f = __builtin_cpu_supports("avx512f");
#endif
  return cpu;
}

// On a Zen 4, four parts against one stream (moe_decode_bench's four_vs_one, fp32 / bf16 / int8):
// with AVX-512, OLMoE 1.01 / 0.92 / 0.91, Qwen3 1.01 / 0.89 / 0.96; with AVX-512 hidden (model 17,
// the AVX2 kernels), OLMoE 0.81-0.83 / 0.92-0.96 / 0.91-1.00 and Qwen3 0.88 / 0.95 / 0.93, one core
// (--clock=thread_cpu) 0.77 / 0.97 / 0.99 and 0.71 / 0.99 / 1.03.
int DefaultOneTokenStreams(const CpuIdentity& cpu) {
  if (!cpu.amd || cpu.family != 25) return 4;
  const unsigned m = cpu.model;
  const bool zen4_model =
      (m >= 0x10 && m <= 0x1f) || (m >= 0x60 && m <= 0x7f) || (m >= 0xa0 && m <= 0xaf);
  return cpu.avx512f || zen4_model ? 1 : 4;
}

absl::StatusOr<int> OneTokenStreamsFromEnv() {
  static const absl::StatusOr<int> streams = []() -> absl::StatusOr<int> {
    const char* env = std::getenv("MOE_ONE_TOKEN_STREAMS");
    if (env == nullptr || *env == '\0') return DefaultOneTokenStreams(ThisCpu());
    for (int choice : kOneTokenStreamChoices) {
      if (std::to_string(choice) == env) return choice;
    }
    return absl::InvalidArgumentError(absl::StrCat("MOE_ONE_TOKEN_STREAMS: \"", env,
                                                   "\" is not 1 or 4 (weight streams per "
                                                   "thread in a one-token dot)"));
  }();
  return streams;
}

int ProcessOneTokenStreams() {
  static const int streams = OneTokenStreamsFromEnv().value_or(DefaultOneTokenStreams(ThisCpu()));
  return streams;
}

const RowDotKernels& BestRowDotKernels(bool allow_avx512, bool allow_int16_dots, bool allow_avx2,
                                       int one_token_streams) {
  // This CPU's sets for each stream choice, looked up once.
  struct Sets {
    const RowDotKernels *avx512, *vnni, *avx2, *avx2_int16;
  };
  auto sets_of = [](int streams) {
    return Sets{Avx512RowDotKernels(streams), Avx512VnniRowDotKernels(streams),
                Avx2RowDotKernels(streams), Avx2Int16RowDotKernels(streams)};
  };
  static const Sets one_stream = sets_of(1), four_streams = sets_of(4);
  const int streams = one_token_streams == 1 || one_token_streams == 4 ? one_token_streams
                                                                       : ProcessOneTokenStreams();
  const Sets& sets = streams == 1 ? one_stream : four_streams;
  if (allow_avx512 && allow_int16_dots && sets.vnni != nullptr) return *sets.vnni;
  if (allow_avx512 && sets.avx512 != nullptr) return *sets.avx512;
  if (allow_avx2 && allow_int16_dots && sets.avx2_int16 != nullptr) return *sets.avx2_int16;
  if (allow_avx2 && sets.avx2 != nullptr) return *sets.avx2;
  return PortableRowDotKernels();
}

}  // namespace moe
