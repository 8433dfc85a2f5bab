// The bf16-activation path of SwigluForward (see common/kernels/swiglu_paths.h).
#include <algorithm>
#include <vector>

#include "common/kernels/swiglu_paths.h"

namespace moe {
namespace {

// Phase 1 computes this many hidden units (of gate and of up) at a time for a chunk of tokens, so
// their float32 sums fit a stack buffer and silu⊙ runs while they are in L1.
constexpr int64_t kHiddenPerBlock = 32;
constexpr int64_t kTokenChunk = 64;
// Phase 2 takes output rows in blocks of this many and runs every token chunk over a block before
// the next, so the block's down rows (≤ 64 × 2 × width bytes) stay in L2 while the activations of
// each chunk stream past them.
constexpr int64_t kOutputPerBlock = 64;
// Minimum chunks handed to one thread (see common/kernels/thread_pool.h), in quads.
constexpr int64_t kMinHiddenQuadsPerChunk = 8;
constexpr int64_t kMinOutputQuadsPerChunk = 4;
// Calls of fewer multiply-adds run on the calling thread: waking a helper costs tens of
// microseconds, what ~2 M multiply-adds take.
constexpr int64_t kMinParallelMacs = 2 << 20;
// Row strides of the bf16 copies of x and of the activations: padded columns plus 32 values, so the
// rows of a token tile do not all fall into one L1 set when the width is a multiple of 2 KB.
int64_t Bf16Stride(int64_t padded_cols) { return padded_cols + 32; }
static_assert(kHiddenPerBlock % 4 == 0 && kOutputPerBlock % 4 == 0, "blocks start on a quad");

}  // namespace

void SwigluBf16Dot(const SwigluWeights::Bf16& w, ConstMatrixView x, MatrixView y,
                   const Bf16DotKernels& dot, const RowDotKernels& kernels,
                   KernelThreadPool* pool) {
  const int64_t d = w.gate.cols(), h = w.gate.rows(), tokens = x.rows;
  const int64_t kx = w.gate.padded_cols(), kh = w.down.padded_cols();
  const int64_t ldx = Bf16Stride(kx), ldact = Bf16Stride(kh);
  std::vector<uint16_t> xb(tokens * ldx, 0);     // zeros past d
  std::vector<uint16_t> act(tokens * ldact, 0);  // zeros past h

  auto round_x = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) dot.round_to_bf16(x.row(t), d, xb.data() + t * ldx);
  };
  // Hidden quads [q0, q1): act = bf16(silu(gate·x) ⊙ (up·x)), the product in float32.
  auto gate_up = [&](int64_t q0, int64_t q1) {
    float sums[kTokenChunk * 2 * kHiddenPerBlock];  // [token][gate n | up n]
    float hidden[kHiddenPerBlock];
    for (int64_t j0 = 4 * q0; j0 < std::min(4 * q1, h); j0 += kHiddenPerBlock) {
      const int64_t n = std::min({kHiddenPerBlock, h - j0, 4 * q1 - j0});
      for (int64_t t0 = 0; t0 < tokens; t0 += kTokenChunk) {
        const int64_t m = std::min(kTokenChunk, tokens - t0);
        const uint16_t* xt = xb.data() + t0 * ldx;
        dot.dots(w.gate.quad(j0 / 4), n, kx, xt, ldx, m, sums, 2 * n);
        dot.dots(w.up.quad(j0 / 4), n, kx, xt, ldx, m, sums + n, 2 * n);
        for (int64_t t = 0; t < m; ++t) {
          kernels.silu_mul(sums + t * 2 * n, sums + t * 2 * n + n, hidden, n);
          dot.round_to_bf16(hidden, n, act.data() + (t0 + t) * ldact + j0);
        }
      }
    }
  };
  // Output quads [q0, q1).
  auto project_down = [&](int64_t q0, int64_t q1) {
    for (int64_t o0 = 4 * q0; o0 < std::min(4 * q1, d); o0 += kOutputPerBlock) {
      const int64_t n = std::min({kOutputPerBlock, d - o0, 4 * q1 - o0});
      for (int64_t t0 = 0; t0 < tokens; t0 += kTokenChunk) {
        const int64_t m = std::min(kTokenChunk, tokens - t0);
        dot.dots(w.down.quad(o0 / 4), n, kh, act.data() + t0 * ldact, ldact, m,
                 y.data + t0 * y.stride + o0, y.stride);
      }
    }
  };

  const KernelThreadPool::Phase phases[] = {
      {tokens, 1, round_x},
      {(h + 3) / 4, kMinHiddenQuadsPerChunk, gate_up},
      {(d + 3) / 4, kMinOutputQuadsPerChunk, project_down},
  };
  if (pool != nullptr && pool->threads() > 1 && 3 * tokens * d * h >= kMinParallelMacs) {
    pool->Run(phases);
  } else {
    for (const KernelThreadPool::Phase& phase : phases) phase.run(0, phase.units);
  }
}

}  // namespace moe
