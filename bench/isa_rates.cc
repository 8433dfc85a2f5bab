// moe_isa_rates: how many of each multiply-accumulate instruction the kernels choose between one
// core retires per second, back to back on 12 independent zmm accumulators (enough to hide every
// latency measured). What a kernel's choice rests on: e.g. AVX512-BF16's vdpbf16ps does two
// products per fp32 lane, so it pays where it retires at the FMA rate (AMD Zen 4/5) and does not
// where it retires at a quarter of it (an Intel Xeon of family 6 model 207: bf16_dot_kernel.h).
//
//   build/bench/moe_isa_rates          (items_per_second: instructions per second, one core)
//
// Each instruction is written in inline assembly (the compiler neither drops nor reorders it)
// and runs only on a CPU whose CPUID reports it; elsewhere its benchmark is skipped, saying why.
#include "benchmark/benchmark.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>

namespace {

// CPUID leaf 7's AVX512-FP16 bit (EDX 23), which older compilers' __builtin_cpu_supports lacks.
bool HasAvx512Fp16() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) && (edx >> 23 & 1) != 0;
}

#define MOE_ISA_12(op)                                                     \
  op " %%zmm14, %%zmm15, %%zmm0\n\t" op " %%zmm14, %%zmm15, %%zmm1\n\t" op \
     " %%zmm14, %%zmm15, %%zmm2\n\t" op " %%zmm14, %%zmm15, %%zmm3\n\t" op \
     " %%zmm14, %%zmm15, %%zmm4\n\t" op " %%zmm14, %%zmm15, %%zmm5\n\t" op \
     " %%zmm14, %%zmm15, %%zmm6\n\t" op " %%zmm14, %%zmm15, %%zmm7\n\t" op \
     " %%zmm14, %%zmm15, %%zmm8\n\t" op " %%zmm14, %%zmm15, %%zmm9\n\t" op \
     " %%zmm14, %%zmm15, %%zmm10\n\t" op " %%zmm14, %%zmm15, %%zmm11\n\t"

#define MOE_ISA_BENCHMARK(name, op, feature, supported)                                            \
  void name(benchmark::State& state) {                                                             \
    __builtin_cpu_init();                                                                          \
    if (!__builtin_cpu_supports("avx512f") || !(supported)) {                                      \
      state.SkipWithError("this CPU has no " feature);                                             \
      return;                                                                                      \
    }                                                                                              \
    asm volatile("vpxord %%zmm14, %%zmm14, %%zmm14\n\tvpxord %%zmm15, %%zmm15, %%zmm15" ::         \
                     : "xmm14", "xmm15");                                                          \
    for (auto _ : state) {                                                                         \
      for (int i = 0; i < 1000; ++i) {                                                             \
        asm volatile(MOE_ISA_12(op)::                                                              \
                         : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", \
                           "xmm9", "xmm10", "xmm11");                                              \
      }                                                                                            \
    }                                                                                              \
    state.SetItemsProcessed(state.iterations() * 12000);                                           \
  }                                                                                                \
  BENCHMARK(name)

MOE_ISA_BENCHMARK(Fp32Fma_vfmadd231ps, "vfmadd231ps", "avx512f", true);  // 16 products
MOE_ISA_BENCHMARK(Bf16Dot_vdpbf16ps, "vdpbf16ps", "avx512bf16",
                  __builtin_cpu_supports("avx512bf16"));  // 32 products
MOE_ISA_BENCHMARK(Int16Dot_vpdpwssd, "vpdpwssd", "avx512vnni",
                  __builtin_cpu_supports("avx512vnni"));  // 32 products
MOE_ISA_BENCHMARK(Int8Dot_vpdpbusd, "vpdpbusd", "avx512vnni",
                  __builtin_cpu_supports("avx512vnni"));  // 64 products
MOE_ISA_BENCHMARK(Fp16Fma_vfmadd231ph, "vfmadd231ph", "avx512fp16",
                  HasAvx512Fp16());  // 32 products
}  // namespace
#endif

BENCHMARK_MAIN();
