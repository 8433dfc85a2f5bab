// The SwiGLU expert FFN of every served family: y = down( silu(gate·x) ⊙ (up·x) ).
// Weights are stored as nn.Linear does ([out, in]). Thread-safe: weights are read-only and each
// call uses its own scratch.
#ifndef MOE_COMMON_SWIGLU_FFN_H_
#define MOE_COMMON_SWIGLU_FFN_H_

#include <cstdint>

#include "absl/status/status.h"
#include "common/matrix.h"

namespace moe {

struct SwigluWeights {
  Matrix gate;  // [width, d_model]
  Matrix up;    // [width, d_model]
  Matrix down;  // [d_model, width]

  int64_t d_model() const { return gate.cols(); }
  int64_t width() const { return gate.rows(); }
  int64_t bytes() const { return (gate.size() + up.size() + down.size()) * sizeof(float); }
};

// x [M, d_model] → y [M, d_model]. InvalidArgument if shapes disagree.
absl::Status SwigluForward(const SwigluWeights& weights, ConstMatrixView x, MatrixView y);

}  // namespace moe

#endif  // MOE_COMMON_SWIGLU_FFN_H_
