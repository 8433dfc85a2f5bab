#include "common/kernels/amx_tiles.h"

#if defined(__x86_64__) && defined(__GNUC__)

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace moe {
namespace {

// CPUID.(EAX=7, ECX=0):EDX bit `bit`.
bool Leaf7EdxBit(int bit) {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
  return (edx >> bit & 1) != 0;
}

constexpr int kAmxBf16Bit = 22, kAmxTileBit = 24;

}  // namespace

bool CpuHasAmxBf16() { return Leaf7EdxBit(kAmxTileBit) && Leaf7EdxBit(kAmxBf16Bit); }

bool AmxTileStateGranted() {
  static const bool granted = [] {
    if (!Leaf7EdxBit(kAmxTileBit)) return false;
    constexpr int kArchReqXcompPerm = 0x1023;
    constexpr int kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return granted;
}

}  // namespace moe

#else  // not x86-64 GCC/Clang

namespace moe {
bool CpuHasAmxBf16() { return false; }
bool AmxTileStateGranted() { return false; }
}  // namespace moe

#endif
