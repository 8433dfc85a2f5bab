// Aligned storage for what the kernels stream: AlignedVector, a std::vector whose buffer starts on
// a 64-byte cache line and lives where its kind says:
// - kScratch (the default): the heap, so buffers a call frees are reused
//   (common/rpc/memory_policy.h);
// - kWeights (WeightBuffer): the weight arena, long-lived weights packed one after another into
//   2 MB-aligned regions that Linux is asked (madvise MADV_HUGEPAGE) to back with transparent huge
//   pages.
//
// Why cache lines: std::allocator hands out malloc's 16-byte alignment, so every 64-byte vector
// load of a weight row straddled two cache lines. Measured on a 2-core AMD EPYC (Zen 5), one
// thread streaming 64 experts' bf16 matrices of the OLMoE shape (12.6 MB each): 16.4 GB/s at
// malloc's offset against 24 GB/s cache-line aligned, and 27 GB/s on huge pages.
//
// Why an arena: huge pages cut the TLB misses of a stream that touches each 4 KB page once, which
// a VM's nested or shadow page tables make dear, and only a whole, aligned 2 MB page can be huge.
// A buffer mapped on its own keeps its last partial 2 MB on small pages: a third of a Qwen3-shape
// bf16 projection (3 MB), all of an int8 one (1.5 MB), and every fp32 projection that came from
// malloc. On a paravirtualised Zen 5 guest such small-page weights made one pass over a layer in
// two or three run at 2-9 GB/s instead of ~17-25 (README.md, "Aligned weights and huge pages"),
// while weights wholly on huge pages streamed at 20-27 GB/s every pass. The arena packs every
// weight buffer into shared huge pages, so no weight byte is left on a small page.
//
// The arena never moves or reuses the address range of a freed buffer: it hands the freed buffer's
// whole 2 MB pages back to Linux (MADV_DONTNEED) at once, the rest when every buffer of its region
// is gone (the region is unmapped). Weights are loaded once per process, so the address space this
// leaves unused is bounded by what loading took. It is for weights only: a per-call buffer would
// leave a hole in it on every call.
//
// Huge pages are advice: with /sys/kernel/mm/transparent_hugepage/enabled at "never", or when the
// kernel has none free, weight buffers are ordinary pages, still packed and aligned.
//
// The allocator is stateful (its kind), propagated with the buffer on copy, move and swap: a copy
// of a weight buffer is a weight buffer. Thread-safe like std::allocator.
#ifndef MOE_COMMON_TENSOR_ALIGNED_VECTOR_H_
#define MOE_COMMON_TENSOR_ALIGNED_VECTOR_H_

#include <cstddef>
#include <type_traits>
#include <vector>

namespace moe {

inline constexpr size_t kCacheLineBytes = 64;
inline constexpr size_t kHugePageBytes = size_t{2} << 20;

enum class BufferKind { kScratch, kWeights };

// `bytes` (> 0) on a cache line, from the heap (kScratch) or the weight arena (kWeights). Throws
// std::bad_alloc when out of memory, as operator new.
void* AllocateAligned(size_t bytes, BufferKind kind);
// Frees what AllocateAligned(bytes, kind) returned.
void FreeAligned(void* p, size_t bytes, BufferKind kind);

// The weight arena's state, for tests: how many regions it has mapped, and the bytes of the
// buffers in it now.
struct WeightArenaStats {
  size_t regions = 0;
  size_t live_bytes = 0;
};
WeightArenaStats GetWeightArenaStats();

template <typename T>
struct AlignedAllocator {
  using value_type = T;
  using propagate_on_container_copy_assignment = std::true_type;
  using propagate_on_container_move_assignment = std::true_type;
  using propagate_on_container_swap = std::true_type;
  template <typename U>
  struct rebind {
    using other = AlignedAllocator<U>;
  };
  AlignedAllocator() = default;
  explicit AlignedAllocator(BufferKind kind) : kind(kind) {}
  template <typename U>
  AlignedAllocator(const AlignedAllocator<U>& other) : kind(other.kind) {}

  T* allocate(size_t n) { return static_cast<T*>(AllocateAligned(n * sizeof(T), kind)); }
  void deallocate(T* p, size_t n) { FreeAligned(p, n * sizeof(T), kind); }

  template <typename U>
  bool operator==(const AlignedAllocator<U>& other) const {
    return kind == other.kind;
  }
  template <typename U>
  bool operator!=(const AlignedAllocator<U>& other) const {
    return kind != other.kind;
  }

  BufferKind kind = BufferKind::kScratch;
};

template <typename T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

// `n` copies of `value` in the weight arena.
template <typename T>
AlignedVector<T> WeightBuffer(size_t n, const T& value = T()) {
  return AlignedVector<T>(n, value, AlignedAllocator<T>(BufferKind::kWeights));
}

}  // namespace moe

#endif  // MOE_COMMON_TENSOR_ALIGNED_VECTOR_H_
