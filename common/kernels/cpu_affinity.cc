#include "common/kernels/cpu_affinity.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>

namespace moe {

std::vector<int> AllowedCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (pthread_getaffinity_np(pthread_self(), sizeof(set), &set) != 0) return cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
  }
  return cpus;
}

KernelCpus ResolveKernelCpus(bool pin, int threads) {
  const std::vector<int> allowed = AllowedCpus();
  KernelCpus out;
  out.threads = threads > 0 ? threads : std::max<int>(1, static_cast<int>(allowed.size()));
  if (pin && out.threads >= 2 && out.threads == static_cast<int>(allowed.size())) {
    out.cpus = allowed;
  }
  return out;
}

bool PinCallingThread(int cpu) {
  if (cpu < 0 || cpu >= CPU_SETSIZE) return false;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0;
}

}  // namespace moe
