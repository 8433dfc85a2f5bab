// The few-token path of SwigluForward (see common/kernels/swiglu_paths.h).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/kernels/swiglu_ffn.h"
#include "common/kernels/swiglu_paths.h"
#include "common/tensor/aligned_vector.h"

namespace moe {
namespace {

// Work is split in quads (4 rows, a Bf16Matrix quad) handed out in guided chunks (see
// common/kernels/thread_pool.h) of at least this many: 32 hidden units, 2 × 32 rows (256 KB fp32 at
// d = 1024) in phase 1; 16 down rows (176 KB fp32 at width 2816) in phase 2.
constexpr int64_t kMinHiddenQuadsPerChunk = 8;
constexpr int64_t kMinOutputQuadsPerChunk = 4;
// ... and 4× as many for one token, whose dots read four weight streams per thread, each started
// anew at every chunk: fewer, longer streams. One token through 64 OLMoE-shape experts in process
// on the PVM Zen 5 (family 26 model 2, 2 threads), 4× against 1× alternating within a process:
// bf16 1.032-1.037× (medians of 8-10 paired rounds), Qwen3-shape bf16 1.033×, OLMoE fp32 1.037×;
// 2× 1.003×, 8× 1.029×, 16× 1.039× with a wider spread (one round at 0.82). Two shards of an
// OLMoE bf16 layer sharing the two cores, one-token requests through a router, 4× against 1×
// alternating over 6 rounds: 0.91-1.06×, median 1.03×.
constexpr int64_t kOneTokenMinHiddenQuadsPerChunk = 4 * kMinHiddenQuadsPerChunk;
constexpr int64_t kOneTokenMinOutputQuadsPerChunk = 4 * kMinOutputQuadsPerChunk;
// Phase 1 computes this many hidden units at a time, so their sums fit a stack buffer.
constexpr int64_t kHiddenPerBlock = 32;
// ... and this many for one token (its sums fill a quarter of that buffer): each projection is read
// in runs of 512 rows before the other's, so that dots reading S parts of a call's quads side by
// side (row_dot_kernel.h) read runs of 512 / S rows, not 32 / S. Measured on a 2-core Zen 3
// (family 25 model 1, KVM; four parts per one-token quad dot), one token through 8 experts of an
// OLMoE layer (`moe_decode_bench --shape=olmoe`, 32 / 512 / 2048 taking turns within one process,
// 8 rounds, median weight GB/s): bf16 40.0 / 42.3 / 42.5 on two threads and 21.0 / 23.0 / 23.1 on
// one, int8 29.4 / 31.7 / 31.1, fp32 30.9 / 31.0 / 30.6 (its four-row tile reads whole rows
// anyway); Qwen3 bf16 31.6 / 32.7 / 32.8.
constexpr int64_t kOneTokenHiddenPerBlock = 512;
// Phase 1 handles tokens in chunks of this many so its sums fit a stack buffer.
constexpr int64_t kTokenChunk = 64;
// Experts with fewer weight bytes run on the calling thread: waking a helper costs more than it
// saves (tens of microseconds vs. ~10 µs of DRAM streaming per 512 KB).
constexpr int64_t kMinParallelBytes = 512 * 1024;
static_assert(kHiddenPerBlock % 4 == 0 && kOneTokenHiddenPerBlock % 4 == 0,
              "blocks start on a bf16 quad");
static_assert(2 * kOneTokenHiddenPerBlock <= kTokenChunk * 2 * kHiddenPerBlock,
              "one token's sums fit the same buffer");

// The activations are kept in the same layout as x (SwigluInputStride over the width): zeros past
// the width, for the BF16 down dots' whole chunks.
int64_t ActivationStride(int64_t width) { return SwigluInputStride(width); }

// Whether x can be read in place: the stride the kernel wants, and zeros in [d, round16(d)), the
// columns BF16 and int8 dots read past d (the 16 further floats of the stride are never read).
bool ReadableInPlace(ConstMatrixView x) {
  if (x.stride != SwigluInputStride(x.cols)) return false;
  const int64_t read_to = (x.cols + 15) / 16 * 16;
  for (int64_t t = 0; t < x.rows; ++t) {
    for (int64_t i = x.cols; i < read_to; ++i) {
      if (x.row(t)[i] != 0.0f) return false;
    }
  }
  return true;
}

// A projection's input rows: float32, and for the VNNI set's int8 dots the same rows rounded to
// int16 (RowDotKernels::quantize_activations; xq null when not rounded).
struct Activations {
  const float* x;
  int64_t ld;
  const int16_t* xq = nullptr;  // [tokens, ld]
  const float* x_scales = nullptr;
};

// Rounds `rows` of `in` (tokens t0 ≤ t < t1, k values each) into `xq` and `x_scales`; sets
// finite[t] to whether it could: no value infinite or NaN (e.g. silu(∞) · 0 among finite ones).
void RoundRows(const RowDotKernels& kernels, const float* x, int64_t ld, int64_t k, int64_t t0,
               int64_t t1, int16_t* xq, float* x_scales, std::vector<uint8_t>& finite) {
  for (int64_t t = t0; t < t1; ++t) {
    const float* row = x + t * ld;
    bool ok = false;
    kernels.quantize_activations(row, ld, 1, k, xq + t * ld, ld, x_scales + t, &ok);
    finite[t] = ok;
  }
}

// dots(first_row, rows, in[t0, t0 + tokens), out, ldo) over one projection, whatever its storage.
class RowBlocks {
 public:
  RowBlocks(const Matrix* f32, const Bf16Matrix* bf16, const Int8Matrix* int8,
            const RowDotKernels& kernels)
      : f32_(f32), bf16_(bf16), int8_(int8), kernels_(kernels) {}

  void Dots(int64_t first_row, int64_t rows, const Activations& in, int64_t t0, int64_t tokens,
            float* out, int64_t ldo) const {
    const float* x = in.x + t0 * in.ld;
    if (int8_ != nullptr && in.xq != nullptr) {
      kernels_.dots_int8_quantized(int8_->quad(first_row / Int8Matrix::kQuadRows),
                                   int8_->scales(first_row), rows, int8_->padded_cols(),
                                   in.xq + t0 * in.ld, in.ld, in.x_scales + t0, tokens, out, ldo);
    } else if (int8_ != nullptr) {
      kernels_.dots_int8(int8_->quad(first_row / Int8Matrix::kQuadRows), int8_->scales(first_row),
                         rows, int8_->padded_cols(), x, in.ld, tokens, out, ldo);
    } else if (bf16_ != nullptr) {
      kernels_.dots_bf16(bf16_->quad(first_row / Bf16Matrix::kQuadRows), rows, bf16_->padded_cols(),
                         x, in.ld, tokens, out, ldo);
    } else {
      kernels_.dots_f32(f32_->row(first_row), f32_->cols(), rows, f32_->cols(), x, in.ld, tokens,
                        out, ldo);
    }
  }

 private:
  const Matrix* f32_;  // exactly one of f32_, bf16_, int8_ is set
  const Bf16Matrix* bf16_;
  const Int8Matrix* int8_;
  const RowDotKernels& kernels_;
};

struct Projections {
  RowBlocks gate, up, down;
};

Projections BlocksOf(const SwigluWeights& weights, const RowDotKernels& kernels) {
  if (const SwigluWeights::Bf16* w = weights.bf16()) {
    return {{nullptr, &w->gate, nullptr, kernels},
            {nullptr, &w->up, nullptr, kernels},
            {nullptr, &w->down, nullptr, kernels}};
  }
  if (const SwigluWeights::Int8* w = weights.int8()) {
    return {{nullptr, nullptr, &w->gate, kernels},
            {nullptr, nullptr, &w->up, kernels},
            {nullptr, nullptr, &w->down, kernels}};
  }
  const SwigluWeights::F32& w = *weights.f32();
  return {{&w.gate, nullptr, nullptr, kernels},
          {&w.up, nullptr, nullptr, kernels},
          {&w.down, nullptr, nullptr, kernels}};
}

}  // namespace

void SwigluStreaming(const SwigluWeights& weights, ConstMatrixView x, MatrixView y,
                     const RowDotKernels& kernels, KernelThreadPool* pool, bool* copied_input) {
  const bool round_activations =
      weights.int8() != nullptr && kernels.dots_int8_quantized != nullptr;
  const Projections blocks = BlocksOf(weights, kernels);
  const RowBlocks &gate = blocks.gate, &up = blocks.up, &down = blocks.down;
  const int64_t d = weights.d_model(), h = weights.width(), tokens = x.rows;
  const int64_t ldx = SwigluInputStride(d), ldact = ActivationStride(h);
  AlignedVector<float> copy;
  const float* xp = x.data;
  *copied_input = !ReadableInPlace(x);
  if (*copied_input) {
    copy.assign(tokens * ldx, 0.0f);  // zeros past d
    for (int64_t t = 0; t < tokens; ++t) std::copy(x.row(t), x.row(t) + d, copy.data() + t * ldx);
    xp = copy.data();
  }
  AlignedVector<float> act(tokens * ldact);  // zeros past h

  // The int16 int8 dots read activations rounded to int16: x once here, the hidden activations in
  // a phase of their own once phase 1 wrote them. A token with a non-finite value (an overflow the
  // caller reports) keeps the float dots for its phase.
  const int64_t kx = (d + 15) / 16 * 16, kact = (h + 15) / 16 * 16;
  Activations input{xp, ldx}, hidden{act.data(), ldact};
  AlignedVector<int16_t> xq, actq;
  std::vector<float> x_scales, act_scales;
  std::vector<uint8_t> x_finite(tokens), act_finite(tokens);
  if (round_activations) {
    xq.resize(tokens * ldx);
    x_scales.resize(tokens);
    actq.resize(tokens * ldact);
    act_scales.resize(tokens);
    RoundRows(kernels, xp, ldx, kx, 0, tokens, xq.data(), x_scales.data(), x_finite);
    if (std::all_of(x_finite.begin(), x_finite.end(), [](uint8_t ok) { return ok; })) {
      input.xq = xq.data();
      input.x_scales = x_scales.data();
    }
  }

  // Phase 1 over hidden quads [q0, q1): blocks of per_block hidden units, one after the
  // other, so gate and up are each read as one contiguous stream.
  const int64_t per_block = tokens == 1 ? kOneTokenHiddenPerBlock : kHiddenPerBlock;
  auto gate_up = [&](int64_t q0, int64_t q1) {
    float sums[kTokenChunk * 2 * kHiddenPerBlock];  // [token][gate n | up n]
    for (int64_t j0 = 4 * q0; j0 < std::min(4 * q1, h); j0 += per_block) {
      const int64_t n = std::min({per_block, h - j0, 4 * q1 - j0});
      for (int64_t t0 = 0; t0 < tokens; t0 += kTokenChunk) {
        const int64_t m = std::min(kTokenChunk, tokens - t0);
        gate.Dots(j0, n, input, t0, m, sums, 2 * n);
        up.Dots(j0, n, input, t0, m, sums + n, 2 * n);
        for (int64_t t = 0; t < m; ++t) {
          kernels.silu_mul(sums + t * 2 * n, sums + t * 2 * n + n,
                           act.data() + (t0 + t) * ldact + j0, n);
        }
      }
    }
  };
  // With rounded activations: the hidden ones, tokens [t0, t1).
  auto round_hidden = [&](int64_t t0, int64_t t1) {
    RoundRows(kernels, act.data(), ldact, kact, t0, t1, actq.data(), act_scales.data(), act_finite);
  };
  // Phase 2 over output quads [q0, q1).
  auto project_down = [&](int64_t q0, int64_t q1) {
    const int64_t o0 = 4 * q0, o1 = std::min(4 * q1, d);
    Activations in = hidden;
    if (round_activations &&
        std::all_of(act_finite.begin(), act_finite.end(), [](uint8_t ok) { return ok; })) {
      in.xq = actq.data();
      in.x_scales = act_scales.data();
    }
    down.Dots(o0, o1 - o0, in, 0, tokens, y.data + o0, y.stride);
  };

  const bool one_token = tokens == 1;
  const KernelThreadPool::Phase phases[] = {
      {(h + 3) / 4, one_token ? kOneTokenMinHiddenQuadsPerChunk : kMinHiddenQuadsPerChunk, gate_up},
      {round_activations ? tokens : 0, 1, round_hidden},
      {(d + 3) / 4, one_token ? kOneTokenMinOutputQuadsPerChunk : kMinOutputQuadsPerChunk,
       project_down},
  };
  if (pool != nullptr && pool->threads() > 1 && weights.bytes() >= kMinParallelBytes) {
    pool->Run(phases);
  } else {
    for (const KernelThreadPool::Phase& phase : phases) {
      if (phase.units > 0) phase.run(0, phase.units);
    }
  }
}

}  // namespace moe
