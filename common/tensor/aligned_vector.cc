#include "common/tensor/aligned_vector.h"

#include <sys/mman.h>

#include <cstdint>
#include <new>

namespace moe {
namespace {

constexpr size_t kPageBytes = 4096;

size_t RoundUp(size_t bytes, size_t to) { return (bytes + to - 1) / to * to; }

}  // namespace

void* AllocateAligned(size_t bytes, bool huge_pages) {
  if (!huge_pages || bytes < kHugePageBytes) {
    return ::operator new(RoundUp(bytes, kCacheLineBytes), std::align_val_t(kCacheLineBytes));
  }
  // Map one huge page more than needed, then give back the parts before the first 2 MB boundary
  // and after the buffer's last page.
  const size_t mapped = RoundUp(bytes, kPageBytes) + kHugePageBytes;
  void* region = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (region == MAP_FAILED) throw std::bad_alloc();
  const uintptr_t start = reinterpret_cast<uintptr_t>(region);
  const uintptr_t aligned = RoundUp(start, kHugePageBytes);
  const uintptr_t end = aligned + RoundUp(bytes, kPageBytes);
  if (aligned > start) munmap(region, aligned - start);
  if (start + mapped > end) munmap(reinterpret_cast<void*>(end), start + mapped - end);
  void* p = reinterpret_cast<void*>(aligned);
  madvise(p, end - aligned, MADV_HUGEPAGE);  // advice: failure leaves ordinary pages
  return p;
}

void FreeAligned(void* p, size_t bytes, bool huge_pages) {
  if (p == nullptr) return;
  if (!huge_pages || bytes < kHugePageBytes) {
    ::operator delete(p, std::align_val_t(kCacheLineBytes));
    return;
  }
  munmap(p, RoundUp(bytes, kPageBytes));
}

}  // namespace moe
