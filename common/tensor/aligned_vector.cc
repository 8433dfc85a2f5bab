#include "common/tensor/aligned_vector.h"

#include <sys/mman.h>

#include <cstdint>
#include <iterator>
#include <map>
#include <new>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace moe {
namespace {

// The arena maps regions of kRegionBytes and carves buffers from the newest one in order; a buffer
// larger than half a region gets a region of its own (rounded up to whole huge pages).
constexpr size_t kRegionBytes = size_t{64} << 20;

uintptr_t RoundUp(uintptr_t value, uintptr_t to) { return (value + to - 1) / to * to; }
uintptr_t RoundDown(uintptr_t value, uintptr_t to) { return value / to * to; }

// `bytes` (a multiple of kHugePageBytes) of fresh memory on a huge page boundary, advised for huge
// pages.
uintptr_t MapHugePageAligned(size_t bytes) {
  // Map one huge page more than needed, then give back the parts outside the aligned range.
  const size_t mapped = bytes + kHugePageBytes;
  void* region = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (region == MAP_FAILED) throw std::bad_alloc();
  const uintptr_t start = reinterpret_cast<uintptr_t>(region);
  const uintptr_t aligned = RoundUp(start, kHugePageBytes);
  if (aligned > start) munmap(region, aligned - start);
  if (start + mapped > aligned + bytes) {
    munmap(reinterpret_cast<void*>(aligned + bytes), start + mapped - (aligned + bytes));
  }
  madvise(reinterpret_cast<void*>(aligned), bytes, MADV_HUGEPAGE);  // advice: may stay small pages
  return aligned;
}

class WeightArena {
 public:
  void* Allocate(size_t bytes) ABSL_LOCKS_EXCLUDED(mu_) {
    const size_t size = RoundUp(bytes, kCacheLineBytes);
    absl::MutexLock lock(&mu_);
    if (size > kRegionBytes / 2) {
      const size_t region_bytes = RoundUp(size, kHugePageBytes);
      const uintptr_t start = MapHugePageAligned(region_bytes);
      regions_[start] = {region_bytes, 1};
      live_bytes_ += size;
      return reinterpret_cast<void*>(start);
    }
    if (next_ == 0 || next_ + size > current_->first + current_->second.bytes) {
      const uintptr_t start = MapHugePageAligned(kRegionBytes);
      current_ = regions_.emplace(start, Region{kRegionBytes, 0}).first;
      next_ = start;
    }
    const uintptr_t p = next_;
    next_ += size;
    ++current_->second.buffers;
    live_bytes_ += size;
    return reinterpret_cast<void*>(p);
  }

  void Free(void* p, size_t bytes) ABSL_LOCKS_EXCLUDED(mu_) {
    const uintptr_t begin = reinterpret_cast<uintptr_t>(p);
    const uintptr_t end = begin + RoundUp(bytes, kCacheLineBytes);
    absl::MutexLock lock(&mu_);
    live_bytes_ -= end - begin;
    auto region = std::prev(regions_.upper_bound(begin));
    if (--region->second.buffers == 0) {
      munmap(reinterpret_cast<void*>(region->first), region->second.bytes);
      if (next_ != 0 && region == current_) next_ = 0;
      regions_.erase(region);
      return;
    }
    // The buffer's whole huge pages go back now; its partial ones are shared with live neighbours.
    const uintptr_t first = RoundUp(begin, kHugePageBytes), last = RoundDown(end, kHugePageBytes);
    if (first < last) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
  }

  WeightArenaStats Stats() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return {regions_.size(), live_bytes_};
  }

 private:
  struct Region {
    size_t bytes;    // of address space, from its start (the map's key)
    size_t buffers;  // live buffers in it
  };

  absl::Mutex mu_;
  std::map<uintptr_t, Region> regions_ ABSL_GUARDED_BY(mu_);  // by start address
  // Where the next buffer goes in the newest shared region current_ (0: none, map one first).
  std::map<uintptr_t, Region>::iterator current_ ABSL_GUARDED_BY(mu_);
  uintptr_t next_ ABSL_GUARDED_BY(mu_) = 0;
  size_t live_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

WeightArena& Arena() {
  static auto* arena = new WeightArena;  // never destroyed: weights may outlive static teardown
  return *arena;
}

}  // namespace

void* AllocateAligned(size_t bytes, BufferKind kind) {
  if (kind == BufferKind::kWeights) return Arena().Allocate(bytes);
  return ::operator new(RoundUp(bytes, kCacheLineBytes), std::align_val_t(kCacheLineBytes));
}

void FreeAligned(void* p, size_t bytes, BufferKind kind) {
  if (p == nullptr) return;
  if (kind == BufferKind::kWeights) {
    Arena().Free(p, bytes);
    return;
  }
  ::operator delete(p, std::align_val_t(kCacheLineBytes));
}

WeightArenaStats GetWeightArenaStats() { return Arena().Stats(); }

}  // namespace moe
