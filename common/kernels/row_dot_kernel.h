// The inner loops of the FFN kernels, in two builds: AVX-512 (chosen at run time when the CPU has
// it; compiled with a target pragma, so no -march flag is needed) and portable C++. Stateless and
// thread-safe. Internal to the FFN kernels; SwigluForward is the public face.
//
// The dots read each weight row from memory once for all tokens: rows are taken four at a time and
// dotted with up to six tokens at once (24 accumulators in registers); more tokens are split into
// even tiles that re-read the same four rows from L1, never from DRAM. BF16 and int8 rows are
// widened to float32 in registers (exact), so x and all sums stay float32; an int8 row's sums are
// multiplied by its scale at the end.
#ifndef MOE_COMMON_KERNELS_ROW_DOT_KERNEL_H_
#define MOE_COMMON_KERNELS_ROW_DOT_KERNEL_H_

#include <cstdint>

namespace moe {

struct RowDotKernels {
  const char* name;  // "avx512" or "portable"
  // out[t * ldo + r] = Σ_{i<k} w[r * ldw + i] · x[t * ldx + i] for r < rows, t < tokens.
  void (*dots_f32)(const float* w, int64_t ldw, int64_t rows, int64_t k, const float* x,
                   int64_t ldx, int64_t tokens, float* out, int64_t ldo);
  // The same for `rows` rows of a Bf16Matrix starting at quad `quads` (common/bf16_matrix.h),
  // k = its padded_cols(). x rows must hold k finite values (zeros past the real columns).
  void (*dots_bf16)(const uint16_t* quads, int64_t rows, int64_t k, const float* x, int64_t ldx,
                    int64_t tokens, float* out, int64_t ldo);
  // act[i] = silu(gate[i]) · up[i] = gate[i] / (1 + e^−gate[i]) · up[i] for i < n.
  void (*silu_mul)(const float* gate, const float* up, float* act, int64_t n);
  // Rows [0, rows) of a Bf16Matrix starting at quad `quads` (stride k = padded_cols()) as float32:
  // out[r * ldo + c] for c < cols.
  void (*unpack_bf16)(const uint16_t* quads, int64_t rows, int64_t k, int64_t cols, float* out,
                      int64_t ldo);
  // The same as dots_bf16 for `rows` rows of an Int8Matrix (common/kernels/int8_matrix.h) starting
  // at quad `quads`, with `scales` the scales of those rows:
  // out[t * ldo + r] = scales[r] · Σ_{i<k} q[r][i] · x[t * ldx + i].
  void (*dots_int8)(const int8_t* quads, const float* scales, int64_t rows, int64_t k,
                    const float* x, int64_t ldx, int64_t tokens, float* out, int64_t ldo);
  // As unpack_bf16, for an Int8Matrix: the dequantised values scales[r] · q[r][c].
  void (*unpack_int8)(const int8_t* quads, const float* scales, int64_t rows, int64_t k,
                      int64_t cols, float* out, int64_t ldo);
};

const RowDotKernels& PortableRowDotKernels();
// nullptr when this CPU (or compiler) has no AVX-512F/BW/VL/DQ.
const RowDotKernels* Avx512RowDotKernels();
// The fastest set this CPU runs; `allow_avx512` = false forces the portable one (tests).
const RowDotKernels& BestRowDotKernels(bool allow_avx512 = true);

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_ROW_DOT_KERNEL_H_
