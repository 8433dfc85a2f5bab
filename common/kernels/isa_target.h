// The instruction-set target of a kernel file: its kernels are compiled for the instruction sets
// it names (not a global -march flag) and handed out only after a run-time CPU check, so the rest
// of the binary runs on any x86-64. Use (x86-64 GCC or Clang only; the kernel files check):
//
//   #include "common/kernels/isa_target.h"  // before <immintrin.h>
//   ...
//   MOE_ISA_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,fma")
//   ... the kernels ...
//   MOE_ISA_TARGET_END()
//
// Including it also silences GCC 12's false -Wuninitialized on AVX-512 intrinsics in that file:
// they start many results from _mm512_undefined_*() (`__m512 __Y = __Y;`), which -Wall reports
// once inlined into a kernel (GCC bug 105593, fixed in GCC 13).
#ifndef MOE_COMMON_KERNELS_ISA_TARGET_H_
#define MOE_COMMON_KERNELS_ISA_TARGET_H_

#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#define MOE_ISA_PRAGMA(text) _Pragma(#text)
#if defined(__clang__)
#define MOE_ISA_TARGET_BEGIN(isa) \
  MOE_ISA_PRAGMA(clang attribute push(__attribute__((target(isa))), apply_to = function))
#define MOE_ISA_TARGET_END() MOE_ISA_PRAGMA(clang attribute pop)
#else
#define MOE_ISA_TARGET_BEGIN(isa) MOE_ISA_PRAGMA(GCC push_options) MOE_ISA_PRAGMA(GCC target(isa))
#define MOE_ISA_TARGET_END() MOE_ISA_PRAGMA(GCC pop_options)
#endif

#endif  // MOE_COMMON_KERNELS_ISA_TARGET_H_
