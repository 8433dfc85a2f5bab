// Which CPUs a kernel thread pool's threads run on (moe_expert --pin_kernel_threads, opt-in).
//
// Why pin: with a shard's kernel threads free to move, Linux sometimes leaves two of them
// time-sharing one CPU while another CPU idles (measured on a 2-core paravirtualised guest: a
// one-token request's gRPC handler, which computes beside the pool's helper, was woken onto the
// helper's CPU and both shared it for milliseconds, the other CPU idle; README "Kernel threads on
// their own CPUs"). Pinned, helper i stays on the i-th CPU; the calling thread (thread 0: in a
// shard, whichever gRPC handler has the call) stays free: moving it to its CPU for each job
// measured slower. With two shards on two cores one-token requests ran 5-6% faster pinned; a
// single shard's slow tail did not change. Not the default: a pinned helper cannot move to an
// idle CPU either, and 256-token bf16 requests of two shards on two cores ran ~4% slower.
//
// Only a pool of one thread per CPU this process may use is pinned: it then owns every such CPU,
// so there is no better place for the scheduler to find. Which CPUs those are is for taskset or
// the container's cpuset to say.
#ifndef MOE_COMMON_KERNELS_CPU_AFFINITY_H_
#define MOE_COMMON_KERNELS_CPU_AFFINITY_H_

#include <vector>

namespace moe {

// The CPUs the calling thread may run on, ascending.
std::vector<int> AllowedCpus();

struct KernelCpus {
  int threads = 1;
  std::vector<int> cpus;  // CPU of thread i (thread 0, the caller, is not pinned); empty: none
};
// The pool for --kernel_threads `threads` (0: one per CPU this process may use), pinned when
// `pin` and the threads are one per such CPU (two or more).
KernelCpus ResolveKernelCpus(bool pin, int threads);

// Pins the calling thread to `cpu` for good; false (nothing changed) when the kernel refuses.
bool PinCallingThread(int cpu);

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_CPU_AFFINITY_H_
