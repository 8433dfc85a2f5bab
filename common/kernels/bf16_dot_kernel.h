// The inner loops of the bf16-activation FFN path (SwigluBf16Dot in swiglu_paths.h): dots of BF16
// weight rows with bf16 token rows, two products per instruction with float32 accumulation
// (AVX512-BF16 vdpbf16ps; AMD Zen 4/5 and Intel Cooper Lake / Sapphire Rapids have it). Built with
// a target pragma (no -march flag) and only handed out after a run-time CPU check. Stateless and
// thread-safe. Internal to the FFN kernels; SwigluForward is the public face.
//
// Weights are read in their Bf16Matrix layout (common/tensor/bf16_matrix.h); each 64-byte load of a
// quad's two interleaved rows is permuted in a register into the two rows' 16 consecutive columns,
// so no repacked copy of the weights exists. Rows are taken four at a time (a quad) and dotted with
// up to 12 tokens at once (24 accumulators); more tokens are split into even tiles that re-read the
// quad from L1.
#ifndef MOE_COMMON_KERNELS_BF16_DOT_KERNEL_H_
#define MOE_COMMON_KERNELS_BF16_DOT_KERNEL_H_

#include <cstdint>

namespace moe {

struct Bf16DotKernels {
  const char* name;  // "avx512bf16"
  // out[t * ldo + r] = Σ_{i<k} w[r][i] · x[t * ldx + i] for r < rows, t < tokens, where w is the
  // `rows` rows of a Bf16Matrix starting at quad `quads` and k = its padded_cols(); x holds bf16
  // bit patterns (k of them per row, zeros past the real columns). Sums in float32.
  void (*dots)(const uint16_t* quads, int64_t rows, int64_t k, const uint16_t* x, int64_t ldx,
               int64_t tokens, float* out, int64_t ldo);
  // out[i] = bf16(in[i]) for i < n, rounded to nearest, ties to even.
  void (*round_to_bf16)(const float* in, int64_t n, uint16_t* out);
};

// nullptr when this CPU (or compiler) has no AVX512-BF16 (with AVX-512F/BW/VL/DQ).
const Bf16DotKernels* Avx512Bf16DotKernels();

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_BF16_DOT_KERNEL_H_
