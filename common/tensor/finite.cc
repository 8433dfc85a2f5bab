#include "common/tensor/finite.h"

#include <algorithm>
#include <cstring>

namespace moe {
namespace {

// The index of the first value whose magnitude's bit pattern is at least `limit` (float32 bit
// patterns of non-negative values order as the values do, NaNs above infinity), or -1. Compared
// as int32 (a magnitude's sign bit is clear), which SSE2 does in one instruction.
int64_t FirstMagnitudeBitsAtLeast(absl::Span<const float> values, int32_t limit) {
  constexpr size_t kBlock = 256;
  const float* p = values.data();  // not values[i]: Debian's Abseil bounds-checks each, which
                                   // keeps the loop scalar
  const size_t n = values.size();
  auto magnitude_bits = [p](size_t i) {
    int32_t bits;
    std::memcpy(&bits, p + i, sizeof(bits));
    return bits & 0x7fffffff;
  };
  for (size_t start = 0; start < n; start += kBlock) {
    const size_t end = std::min(n, start + kBlock);
    uint32_t found = 0;
    for (size_t i = start; i < end; ++i) found |= static_cast<uint32_t>(magnitude_bits(i) >= limit);
    if (found == 0) continue;
    for (size_t i = start; i < end; ++i) {
      if (magnitude_bits(i) >= limit) return static_cast<int64_t>(i);
    }
  }
  return -1;
}

}  // namespace

int64_t FirstNonFinite(absl::Span<const float> values) {
  return FirstMagnitudeBitsAtLeast(values, 0x7f800000);  // infinity; NaNs lie above it
}

int64_t FirstNonFiniteAsBf16(absl::Span<const float> values) {
  // Halfway between bf16's largest finite value (0x7f7f) and infinity (0x7f80): rounding to
  // nearest, ties to even, takes it and everything above to infinity.
  return FirstMagnitudeBitsAtLeast(values, 0x7f7f8000);
}

int64_t FirstNonFiniteBf16Bits(absl::Span<const uint16_t> bits) {
  constexpr size_t kBlock = 512;
  constexpr uint16_t kExponent = 0x7f80;  // all ones: infinity or NaN
  const uint16_t* p = bits.data();
  const size_t n = bits.size();
  for (size_t start = 0; start < n; start += kBlock) {
    const size_t end = std::min(n, start + kBlock);
    uint16_t found = 0;
    for (size_t i = start; i < end; ++i)
      found |= static_cast<uint16_t>((p[i] & kExponent) == kExponent);
    if (found == 0) continue;
    for (size_t i = start; i < end; ++i) {
      if ((p[i] & kExponent) == kExponent) return static_cast<int64_t>(i);
    }
  }
  return -1;
}

}  // namespace moe
