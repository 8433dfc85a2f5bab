// How the servers' processes keep freed memory. Every large call allocates and frees megabytes
// (messages, slices, output tensors). glibc hands such blocks straight back to the kernel (mmap
// above a threshold, heap trimming), so the next call page-faults the same megabytes in again:
// measured with bench/wire_bench.cc, that was most of a 1 MB loopback call's CPU time on a
// virtual machine, where page faults are expensive. KeepFreedMemory() makes glibc serve blocks
// up to 32 MB from its heaps and keep freed heap memory, so steady-state calls reuse pages: the
// process holds on to its peak heap (bounded by its message size limits and threads). Call it
// once, first thing in main. Not thread-safe.
//
// Loading is the exception: a checkpoint's tensors are read and widened to float32 on the heap
// before they are copied, rounded or quantised into the weight arena (aligned_vector.h), and the
// heap would keep that peak for good (measured: 150-230 MB of a Qwen3 half-layer shard's int8 or
// fp32 weights). ReleaseFreedMemory() gives the heaps' free memory back (glibc's malloc_trim);
// call it once after loading.
#ifndef MOE_COMMON_RPC_MEMORY_POLICY_H_
#define MOE_COMMON_RPC_MEMORY_POLICY_H_

namespace moe {

void KeepFreedMemory();
void ReleaseFreedMemory();

}  // namespace moe

#endif  // MOE_COMMON_RPC_MEMORY_POLICY_H_
