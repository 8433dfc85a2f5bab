// Aligned storage for what the kernels stream. AlignedVector: std::vector whose buffer starts on a
// 64-byte cache line (from the heap, so buffers a call frees are reused: memory_policy.h).
// WeightVector: the same for long-lived weights, except that buffers of 2 MB and more are mapped
// on a 2 MB boundary of their own, with Linux asked (madvise MADV_HUGEPAGE) to back them with
// transparent huge pages.
//
// Why: std::allocator hands out malloc's 16-byte alignment, so every 64-byte vector load of a
// weight row straddled two cache lines. Measured on a 2-core AMD EPYC (Zen 5), one thread
// streaming 64 experts' bf16 matrices of the OLMoE shape (12.6 MB each): 16.4 GB/s at malloc's
// offset against 24 GB/s cache-line aligned, and 27 GB/s on huge pages (fp32: 27 → 28-29, and
// 0-5% more on huge pages). Huge pages cut the TLB misses of a stream that touches each 4 KB
// page once, which a VM's nested page tables make dear. They are for weights only: a per-call
// buffer would be mapped, faulted in and unmapped on every call.
//
// Huge pages are advice: with /sys/kernel/mm/transparent_hugepage/enabled at "never", or when the
// kernel has none free, the buffer is ordinary pages, still aligned.
//
// Stateless allocators; thread-safe like std::allocator.
#ifndef MOE_COMMON_TENSOR_ALIGNED_VECTOR_H_
#define MOE_COMMON_TENSOR_ALIGNED_VECTOR_H_

#include <cstddef>
#include <vector>

namespace moe {

inline constexpr size_t kCacheLineBytes = 64;
inline constexpr size_t kHugePageBytes = size_t{2} << 20;

// `bytes` (> 0) on a cache line; from kHugePageBytes on with `huge_pages`, a mapping of their own
// on a huge page boundary, advised. Throws std::bad_alloc when out of memory, as operator new.
void* AllocateAligned(size_t bytes, bool huge_pages);
// Frees what AllocateAligned(bytes, huge_pages) returned.
void FreeAligned(void* p, size_t bytes, bool huge_pages);

template <typename T, bool kHugePages>
struct AlignedAllocator {
  using value_type = T;
  template <typename U>
  struct rebind {
    using other = AlignedAllocator<U, kHugePages>;
  };
  AlignedAllocator() = default;
  template <typename U>
  AlignedAllocator(const AlignedAllocator<U, kHugePages>&) {}

  T* allocate(size_t n) { return static_cast<T*>(AllocateAligned(n * sizeof(T), kHugePages)); }
  void deallocate(T* p, size_t n) { FreeAligned(p, n * sizeof(T), kHugePages); }

  template <typename U>
  bool operator==(const AlignedAllocator<U, kHugePages>&) const {
    return true;
  }
  template <typename U>
  bool operator!=(const AlignedAllocator<U, kHugePages>&) const {
    return false;
  }
};

template <typename T>
using AlignedVector = std::vector<T, AlignedAllocator<T, false>>;
template <typename T>
using WeightVector = std::vector<T, AlignedAllocator<T, true>>;

}  // namespace moe

#endif  // MOE_COMMON_TENSOR_ALIGNED_VECTOR_H_
