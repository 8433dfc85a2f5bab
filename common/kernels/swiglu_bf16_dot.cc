// The bf16-activation path of SwigluForward (see common/kernels/swiglu_paths.h).
#include <algorithm>
#include <vector>

#include "common/kernels/swiglu_paths.h"
#include "common/tensor/aligned_vector.h"

namespace moe {
namespace {

// Phase 1 computes a block of hidden units (the kernel's rows_per_block, of gate and of up) at a
// time for a chunk of tokens, so their float32 sums fit a stack buffer and silu⊙ runs while they
// are in L1.
constexpr int64_t kMaxHiddenPerBlock = 64;
constexpr int64_t kTokenChunk = 64;
// Phase 2 takes output rows in blocks of this many and runs every token chunk over a block before
// the next, so the block's down rows (≤ 64 × 2 × width bytes) stay in L2 while the activations of
// each chunk stream past them.
constexpr int64_t kOutputPerBlock = 64;
// Calls of fewer multiply-adds run on the calling thread: waking a helper costs tens of
// microseconds, what ~2 M multiply-adds take.
constexpr int64_t kMinParallelMacs = 2 << 20;
static_assert(kTokenChunk % kBf16DotTokenAlign == 0, "token chunks start on a packed group");

int64_t Blocks(int64_t rows, int64_t per_block) { return (rows + per_block - 1) / per_block; }

// Sums of the `n` rows of `m` from row r0 (a multiple of 4) against packed tokens.
void BlockDots(const Bf16DotKernels& dot, const Bf16Matrix& m, int64_t r0, int64_t n,
               const uint16_t* packed, int64_t t0, int64_t tokens, float* out, int64_t ldo) {
  dot.dots(m.quad(r0 / 4), n, m.padded_cols(), packed, t0, tokens, out, ldo);
}
void BlockDots(const Bf16DotKernels& dot, const Int8Matrix& m, int64_t r0, int64_t n,
               const uint16_t* packed, int64_t t0, int64_t tokens, float* out, int64_t ldo) {
  dot.dots_int8(m.quad(r0 / 4), m.scales(r0), n, m.padded_cols(), packed, t0, tokens, out, ldo);
}

template <typename Projections>
void Forward(const Projections& w, ConstMatrixView x, MatrixView y, const Bf16DotKernels& dot,
             const RowDotKernels& kernels, KernelThreadPool* pool) {
  const int64_t d = w.gate.cols(), h = w.gate.rows(), tokens = x.rows;
  const int64_t kx = w.gate.padded_cols(), kh = w.down.padded_cols();
  const int64_t hidden_per_block = std::min(dot.rows_per_block, kMaxHiddenPerBlock);
  AlignedVector<uint16_t> xb(dot.packed_values(tokens, kx), 0);   // zeros past d
  AlignedVector<uint16_t> act(dot.packed_values(tokens, kh), 0);  // zeros past h

  // Token groups [g0, g1) (of kBf16DotTokenAlign tokens).
  auto pack_x = [&](int64_t g0, int64_t g1) {
    const int64_t t0 = g0 * kBf16DotTokenAlign, t1 = std::min(tokens, g1 * kBf16DotTokenAlign);
    dot.pack(x.row(t0), x.stride, t1 - t0, d, t0, 0, kx, xb.data());
  };
  // Hidden blocks [b0, b1): act = bf16(silu(gate·x) ⊙ (up·x)), the product in float32.
  auto gate_up = [&](int64_t b0, int64_t b1) {
    float sums[kTokenChunk * 2 * kMaxHiddenPerBlock];  // [token][gate n | up n]
    float hidden[kTokenChunk * kMaxHiddenPerBlock];    // [token][n]
    for (int64_t j0 = b0 * hidden_per_block; j0 < std::min(b1 * hidden_per_block, h);
         j0 += hidden_per_block) {
      const int64_t n = std::min(hidden_per_block, h - j0);
      for (int64_t t0 = 0; t0 < tokens; t0 += kTokenChunk) {
        const int64_t m = std::min(kTokenChunk, tokens - t0);
        BlockDots(dot, w.gate, j0, n, xb.data(), t0, m, sums, 2 * n);
        BlockDots(dot, w.up, j0, n, xb.data(), t0, m, sums + n, 2 * n);
        for (int64_t t = 0; t < m; ++t) {
          kernels.silu_mul(sums + t * 2 * n, sums + t * 2 * n + n, hidden + t * n, n);
        }
        dot.pack(hidden, n, m, n, t0, j0, kh, act.data());
      }
    }
  };
  // Output blocks [b0, b1).
  auto project_down = [&](int64_t b0, int64_t b1) {
    for (int64_t o0 = b0 * kOutputPerBlock; o0 < std::min(b1 * kOutputPerBlock, d);
         o0 += kOutputPerBlock) {
      const int64_t n = std::min(kOutputPerBlock, d - o0);
      for (int64_t t0 = 0; t0 < tokens; t0 += kTokenChunk) {
        const int64_t m = std::min(kTokenChunk, tokens - t0);
        BlockDots(dot, w.down, o0, n, act.data(), t0, m, y.data + t0 * y.stride + o0, y.stride);
      }
    }
  };

  const KernelThreadPool::Phase phases[] = {
      {(tokens + kBf16DotTokenAlign - 1) / kBf16DotTokenAlign, 1, pack_x},
      {Blocks(h, hidden_per_block), 1, gate_up},
      {Blocks(d, kOutputPerBlock), 1, project_down},
  };
  if (pool != nullptr && pool->threads() > 1 && 3 * tokens * d * h >= kMinParallelMacs) {
    pool->Run(phases);
  } else {
    for (const KernelThreadPool::Phase& phase : phases) phase.run(0, phase.units);
  }
}

}  // namespace

void SwigluBf16Dot(const SwigluWeights& weights, ConstMatrixView x, MatrixView y,
                   const Bf16DotKernels& dot, const RowDotKernels& kernels,
                   KernelThreadPool* pool) {
  if (const SwigluWeights::Int8* int8 = weights.int8(); int8 != nullptr) {
    Forward(*int8, x, y, dot, kernels, pool);
  } else {
    Forward(*weights.bf16(), x, y, dot, kernels, pool);
  }
}

}  // namespace moe
