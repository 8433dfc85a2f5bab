// Storage for weights that the kernels stream: std::vector with an allocator that starts every
// buffer on a cache line, and buffers of 2 MB and more on a 2 MB boundary, with Linux asked
// (madvise MADV_HUGEPAGE) to back them with transparent huge pages.
//
// Why: std::allocator hands out malloc's 16-byte alignment, so every 64-byte vector load of a
// weight row straddled two cache lines. Measured on a 2-core AMD EPYC (Zen 5), one thread
// streaming 64 experts' bf16 matrices of the OLMoE shape (12.6 MB each): 16.4 GB/s at malloc's
// offset against 24 GB/s cache-line aligned, and 27 GB/s on huge pages (fp32: 27 → 29). Huge
// pages cut the TLB misses of a stream that touches each 4 KB page once, which a VM's nested
// page tables make dear.
//
// Huge pages are advice: with /sys/kernel/mm/transparent_hugepage/enabled at "never", or when the
// kernel has none free, the buffer is ordinary pages, still aligned. Large buffers are mmap'ed
// directly (and unmapped when freed), so they never sit in malloc's arenas.
//
// Stateless; thread-safe like std::allocator.
#ifndef MOE_COMMON_TENSOR_ALIGNED_VECTOR_H_
#define MOE_COMMON_TENSOR_ALIGNED_VECTOR_H_

#include <cstddef>
#include <vector>

namespace moe {

inline constexpr size_t kCacheLineBytes = 64;
inline constexpr size_t kHugePageBytes = size_t{2} << 20;

// Bytes at `bytes` (> 0): cache-line aligned; from kHugePageBytes on, huge-page aligned and
// advised. Throws std::bad_alloc when out of memory, as operator new does.
void* AllocateAligned(size_t bytes);
// Frees what AllocateAligned(bytes) returned.
void FreeAligned(void* p, size_t bytes);

template <typename T>
struct AlignedAllocator {
  using value_type = T;
  AlignedAllocator() = default;
  template <typename U>
  AlignedAllocator(const AlignedAllocator<U>&) {}

  T* allocate(size_t n) { return static_cast<T*>(AllocateAligned(n * sizeof(T))); }
  void deallocate(T* p, size_t n) { FreeAligned(p, n * sizeof(T)); }

  template <typename U>
  bool operator==(const AlignedAllocator<U>&) const {
    return true;
  }
  template <typename U>
  bool operator!=(const AlignedAllocator<U>&) const {
    return false;
  }
};

template <typename T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

}  // namespace moe

#endif  // MOE_COMMON_TENSOR_ALIGNED_VECTOR_H_
