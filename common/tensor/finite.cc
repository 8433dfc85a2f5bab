#include "common/tensor/finite.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace moe {

int64_t FirstNonFinite(absl::Span<const float> values) {
  constexpr size_t kBlock = 256;
  constexpr uint32_t kExponent = 0x7f800000u;  // all ones: infinity or NaN
  const float* p = values.data();  // not values[i]: Debian's Abseil bounds-checks each, which
                                   // keeps the loop scalar
  const size_t n = values.size();
  for (size_t start = 0; start < n; start += kBlock) {
    const size_t end = std::min(n, start + kBlock);
    uint32_t found = 0;
    for (size_t i = start; i < end; ++i) {
      uint32_t bits;
      std::memcpy(&bits, p + i, sizeof(bits));
      found |= static_cast<uint32_t>((bits & kExponent) == kExponent);
    }
    if (found == 0) continue;
    for (size_t i = start; i < end; ++i) {
      if (!std::isfinite(p[i])) return static_cast<int64_t>(i);
    }
  }
  return -1;
}

}  // namespace moe
