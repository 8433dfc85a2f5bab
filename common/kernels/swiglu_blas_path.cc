// The many-token path of SwigluForward (see common/kernels/swiglu_paths.h).
#include <algorithm>
#include <vector>

#include "common/kernels/blas_kernels.h"
#include "common/kernels/swiglu_paths.h"
#include "common/status/status_macros.h"

namespace moe {
namespace {

// BF16 and int8 weights are widened (dequantised) this many rows (of gate and of up, or of down) at
// a time: a few MB of scratch that stays in L3, and sgemm calls still large enough to run near
// peak. A multiple of 4 (blocks start on a quad).
constexpr int64_t kWidenRows = 256;
static_assert(kWidenRows % 4 == 0);

absl::Status BlasF32(const SwigluWeights::F32& w, ConstMatrixView x, MatrixView y,
                     const RowDotKernels& kernels) {
  const int64_t tokens = x.rows, h = w.gate.rows();
  Matrix act(tokens, h);  // gate·x first, then silu(gate·x) ⊙ (up·x) in place
  Matrix up(tokens, h);
  RETURN_IF_ERROR(MatMulTransposed(x, w.gate, act.view()));
  RETURN_IF_ERROR(MatMulTransposed(x, w.up, up.view()));
  kernels.silu_mul(act.data(), up.data(), act.data(), act.size());
  return MatMulTransposed(act, w.down, y);
}

// Rows [r0, r0 + n) of m as float32, row-major with stride m.cols(), into out.
void Unpack(const RowDotKernels& kernels, const Bf16Matrix& m, int64_t r0, int64_t n, float* out) {
  kernels.unpack_bf16(m.quad(r0 / Bf16Matrix::kQuadRows), n, m.padded_cols(), m.cols(), out,
                      m.cols());
}
void Unpack(const RowDotKernels& kernels, const Int8Matrix& m, int64_t r0, int64_t n, float* out) {
  kernels.unpack_int8(m.quad(r0 / Int8Matrix::kQuadRows), m.scales(r0), n, m.padded_cols(),
                      m.cols(), out, m.cols());
}

// Bf16 or Int8 projections, widened block by block.
template <typename Projections>
absl::Status BlasWidened(const Projections& w, ConstMatrixView x, MatrixView y,
                         const RowDotKernels& kernels) {
  const int64_t tokens = x.rows, d = w.gate.cols(), h = w.gate.rows();
  const int64_t block = std::min(kWidenRows, std::max(h, d));
  std::vector<float> wide(block * std::max(2 * d, h));
  std::vector<float> sums(tokens * 2 * block);
  Matrix act(tokens, h);
  auto unpack = [&](const auto& m, int64_t r0, int64_t n, float* out) {
    Unpack(kernels, m, r0, n, out);
  };
  for (int64_t j0 = 0; j0 < h; j0 += block) {
    const int64_t n = std::min(block, h - j0);
    // wide = [gate rows j0..j0+n | up rows j0..j0+n], one sgemm for both.
    unpack(w.gate, j0, n, wide.data());
    unpack(w.up, j0, n, wide.data() + n * d);
    RETURN_IF_ERROR(
        MatMulTransposed(x, ConstMatrixView{wide.data(), 2 * n, d}, {sums.data(), tokens, 2 * n}));
    for (int64_t t = 0; t < tokens; ++t) {
      const float* s = sums.data() + t * 2 * n;
      kernels.silu_mul(s, s + n, act.row(t) + j0, n);
    }
  }
  for (int64_t o0 = 0; o0 < d; o0 += block) {
    const int64_t n = std::min(block, d - o0);
    unpack(w.down, o0, n, wide.data());
    RETURN_IF_ERROR(
        MatMulTransposed(act, ConstMatrixView{wide.data(), n, h}, {sums.data(), tokens, n}));
    for (int64_t t = 0; t < tokens; ++t) {
      std::copy(sums.data() + t * n, sums.data() + (t + 1) * n, y.row(t) + o0);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SwigluBlas(const SwigluWeights& weights, ConstMatrixView x, MatrixView y,
                        const RowDotKernels& kernels) {
  if (const SwigluWeights::Bf16* w = weights.bf16()) return BlasWidened(*w, x, y, kernels);
  if (const SwigluWeights::Int8* w = weights.int8()) return BlasWidened(*w, x, y, kernels);
  return BlasF32(*weights.f32(), x, y, kernels);
}

}  // namespace moe
