// The scan that guards the numbers a layer takes in and hands out: where an array of float32 first
// holds a NaN or an infinity. Every request's inputs, gate logits, expert outputs and weighted
// sums pass through it, megabytes per call at 256 tokens, so it reads the exponent bits of a block
// of values at a time with a branch-free reduction the compiler vectorises, and looks value by
// value only inside a block that holds one. Stateless; thread-safe.
#ifndef MOE_COMMON_TENSOR_FINITE_H_
#define MOE_COMMON_TENSOR_FINITE_H_

#include <cstdint>

#include "absl/types/span.h"

namespace moe {

// The index of the first value of `values` that is NaN or ±infinity, or -1 when every value is
// finite (an empty span included).
int64_t FirstNonFinite(absl::Span<const float> values);
// The same for the values as bf16 would hold them (F32ToBf16): also the finite float32 values
// too large for bf16 (|v| ≥ 3.39617e38, halfway from its largest value to 2^128), which round
// to ±infinity.
int64_t FirstNonFiniteAsBf16(absl::Span<const float> values);
// The same over bf16 bit patterns (the top halves of float32 ones).
int64_t FirstNonFiniteBf16Bits(absl::Span<const uint16_t> bits);

}  // namespace moe

#endif  // MOE_COMMON_TENSOR_FINITE_H_
