// Which CPUs a kernel thread pool's threads run on (moe_expert --kernel_affinity).
//
// Why pin at all: with a shard's kernel threads free to move, Linux sometimes leaves two of them
// time-sharing one CPU while another CPU idles (measured on a 2-core paravirtualised guest: a
// one-token request's gRPC handler, which computes beside the pool's helper, was woken onto the
// helper's CPU and both shared it for milliseconds, the other CPU idle; README "Kernel threads on
// their own CPUs"). Pinned, helper i stays on the i-th CPU; the calling thread (thread 0: in a
// shard, whichever gRPC handler has the call) stays free, so the scheduler moves it off a
// helper's CPU rather than the helper. Pinning the caller too, for the length of each job,
// measured slower than leaving it free.
//
// "auto" pins when the pool has one thread per CPU this process may use: the pool then owns
// every such CPU, so there is no better place for the scheduler to find. Which CPUs those are is
// for taskset or the container's cpuset to say. "none" never pins.
#ifndef MOE_COMMON_KERNELS_CPU_AFFINITY_H_
#define MOE_COMMON_KERNELS_CPU_AFFINITY_H_

#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe {

// The CPUs the calling thread may run on, ascending.
std::vector<int> AllowedCpus();

struct KernelCpus {
  int threads = 1;
  std::vector<int> cpus;  // CPU of thread i (thread 0, the caller, is not pinned); empty: none
};
// The pool for --kernel_threads `threads` (0: one per CPU this process may use) and
// --kernel_affinity `affinity`; InvalidArgument naming the accepted values for any other.
absl::StatusOr<KernelCpus> ResolveKernelCpus(absl::string_view affinity, int threads);

// Pins the calling thread to `cpu` for good; false (nothing changed) when the kernel refuses.
bool PinCallingThread(int cpu);

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_CPU_AFFINITY_H_
