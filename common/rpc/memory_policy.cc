#include "common/rpc/memory_policy.h"

#include <malloc.h>

namespace moe {

void KeepFreedMemory() {
  // 32 MB is glibc's largest mmap threshold on 64-bit hosts; setting it also stops glibc from
  // adjusting it (and the trim threshold) on its own.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

void ReleaseFreedMemory() { malloc_trim(0); }

}  // namespace moe
