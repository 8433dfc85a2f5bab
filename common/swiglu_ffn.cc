#include "common/swiglu_ffn.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/blas_kernels.h"
#include "common/status_macros.h"

namespace moe {

absl::Status SwigluForward(const SwigluWeights& weights, ConstMatrixView x, MatrixView y) {
  const int64_t d = weights.d_model();
  const int64_t h = weights.width();
  if (weights.up.rows() != h || weights.up.cols() != d || weights.down.rows() != d ||
      weights.down.cols() != h) {
    return absl::InvalidArgumentError("SwiGLU weights have inconsistent shapes");
  }
  if (x.cols != d || y.cols != d || y.rows != x.rows) {
    return absl::InvalidArgumentError(absl::StrCat("SwiGLU input [", x.rows, ",", x.cols,
                                                   "] / output [", y.rows, ",", y.cols,
                                                   "] do not match d_model ", d));
  }
  Matrix gate(x.rows, h);
  Matrix up(x.rows, h);
  RETURN_IF_ERROR(MatMulTransposed(x, weights.gate, gate.view()));
  RETURN_IF_ERROR(MatMulTransposed(x, weights.up, up.view()));
  float* g = gate.data();
  const float* u = up.data();
  for (int64_t i = 0; i < gate.size(); ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  return MatMulTransposed(gate, weights.down, y);
}

}  // namespace moe
