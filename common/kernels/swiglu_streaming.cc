// The few-token path of SwigluForward (see common/swiglu_paths.h).
#include <algorithm>
#include <vector>

#include "common/kernels/swiglu_paths.h"

namespace moe {
namespace {

// Work is split in quads (4 rows, a Bf16Matrix quad) handed out in guided chunks (see
// common/thread_pool.h) of at least this many: 32 hidden units, 2 × 32 rows (256 KB fp32 at
// d = 1024) in phase 1; 16 down rows (176 KB fp32 at width 2816) in phase 2.
constexpr int64_t kMinHiddenQuadsPerChunk = 8;
constexpr int64_t kMinOutputQuadsPerChunk = 4;
// Phase 1 computes this many hidden units at a time, so their sums fit a stack buffer.
constexpr int64_t kHiddenPerBlock = 32;
// Phase 1 handles tokens in chunks of this many so its sums fit a stack buffer.
constexpr int64_t kTokenChunk = 64;
// Experts with fewer weight bytes run on the calling thread: waking a helper costs more than it
// saves (tens of microseconds vs. ~10 µs of DRAM streaming per 512 KB).
constexpr int64_t kMinParallelBytes = 512 * 1024;
static_assert(kHiddenPerBlock % 4 == 0, "blocks start on a bf16 quad");

// Rows of x and of the activations are copied to this stride: zero-padded to a multiple of 16
// (BF16 dots read whole chunks) plus 64 bytes, so the token rows of a tile do not all fall into the
// same L1 set when the width is a multiple of 4 KB (d_model usually is).
int64_t PaddedStride(int64_t n) { return (n + 15) / 16 * 16 + 16; }

// dots(first_row, rows, x, ldx, tokens, out, ldo) over one weight matrix, whatever its storage.
class RowBlocks {
 public:
  RowBlocks(const Matrix& f32, const Bf16Matrix& bf16, bool is_bf16, const RowDotKernels& kernels)
      : f32_(f32), bf16_(bf16), is_bf16_(is_bf16), kernels_(kernels) {}

  void Dots(int64_t first_row, int64_t rows, const float* x, int64_t ldx, int64_t tokens,
            float* out, int64_t ldo) const {
    if (is_bf16_) {
      kernels_.dots_bf16(bf16_.quad(first_row / Bf16Matrix::kQuadRows), rows, bf16_.padded_cols(),
                         x, ldx, tokens, out, ldo);
    } else {
      kernels_.dots_f32(f32_.row(first_row), f32_.cols(), rows, f32_.cols(), x, ldx, tokens, out,
                        ldo);
    }
  }

 private:
  const Matrix& f32_;
  const Bf16Matrix& bf16_;
  bool is_bf16_;
  const RowDotKernels& kernels_;
};

}  // namespace

absl::Status SwigluStreaming(const SwigluWeights& weights, ConstMatrixView x, MatrixView y,
                             const RowDotKernels& kernels, KernelThreadPool* pool) {
  const bool bf16 = weights.storage == DType::kBF16;
  const RowBlocks gate(weights.gate, weights.gate_bf16, bf16, kernels);
  const RowBlocks up(weights.up, weights.up_bf16, bf16, kernels);
  const RowBlocks down(weights.down, weights.down_bf16, bf16, kernels);
  const int64_t d = weights.d_model(), h = weights.width(), tokens = x.rows;
  const int64_t ldx = PaddedStride(d), ldact = PaddedStride(h);
  std::vector<float> xp(tokens * ldx);  // zeros past d
  for (int64_t t = 0; t < tokens; ++t) std::copy(x.row(t), x.row(t) + d, xp.data() + t * ldx);
  std::vector<float> act(tokens * ldact);  // zeros past h

  // Phase 1 over hidden quads [q0, q1): blocks of kHiddenPerBlock hidden units, one after the
  // other, so gate and up are each read as one contiguous stream.
  auto gate_up = [&](int64_t q0, int64_t q1) {
    float sums[kTokenChunk * 2 * kHiddenPerBlock];  // [token][gate n | up n]
    for (int64_t j0 = 4 * q0; j0 < std::min(4 * q1, h); j0 += kHiddenPerBlock) {
      const int64_t n = std::min({kHiddenPerBlock, h - j0, 4 * q1 - j0});
      for (int64_t t0 = 0; t0 < tokens; t0 += kTokenChunk) {
        const int64_t m = std::min(kTokenChunk, tokens - t0);
        gate.Dots(j0, n, xp.data() + t0 * ldx, ldx, m, sums, 2 * n);
        up.Dots(j0, n, xp.data() + t0 * ldx, ldx, m, sums + n, 2 * n);
        for (int64_t t = 0; t < m; ++t) {
          kernels.silu_mul(sums + t * 2 * n, sums + t * 2 * n + n,
                           act.data() + (t0 + t) * ldact + j0, n);
        }
      }
    }
  };
  // Phase 2 over output quads [q0, q1).
  auto project_down = [&](int64_t q0, int64_t q1) {
    const int64_t o0 = 4 * q0, o1 = std::min(4 * q1, d);
    down.Dots(o0, o1 - o0, act.data(), ldact, tokens, y.data + o0, d);
  };

  const KernelThreadPool::Phase phases[] = {
      {(h + 3) / 4, kMinHiddenQuadsPerChunk, gate_up},
      {(d + 3) / 4, kMinOutputQuadsPerChunk, project_down},
  };
  if (pool != nullptr && pool->threads() > 1 && weights.bytes() >= kMinParallelBytes) {
    pool->Run(phases);
  } else {
    for (const KernelThreadPool::Phase& phase : phases) phase.run(0, phase.units);
  }
  return absl::OkStatus();
}

}  // namespace moe
