// Mutexes as a serving binary wants them: without Abseil's lock-order (deadlock) checking.
//
// Debian builds its Abseil without NDEBUG, so every absl::Mutex acquisition is checked for
// lock-order cycles: a process-wide lock and a graph update per Lock (GraphCycles showed in the
// router's and shards' profiles). The tests keep the check (their mains never call this); the
// servers and the benchmark that is their in-process baseline turn it off, first thing in main().
#ifndef MOE_COMMON_CLI_SERVING_MUTEXES_H_
#define MOE_COMMON_CLI_SERVING_MUTEXES_H_

namespace moe {

void UseServingMutexes();

}  // namespace moe

#endif  // MOE_COMMON_CLI_SERVING_MUTEXES_H_
