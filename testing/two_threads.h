// A stand-in for a kernel pool's threads in tests of code that hands its work out: runs run(i) for
// every i in [0, n) on the calling thread and one more, each claiming the next i until none is
// left, and returns when all have run.
#ifndef MOE_TESTING_TWO_THREADS_H_
#define MOE_TESTING_TWO_THREADS_H_

#include <atomic>
#include <cstddef>
#include <thread>

#include "absl/functional/function_ref.h"

namespace moe::testing {

inline void RunOnTwoThreads(size_t n, absl::FunctionRef<void(size_t)> run) {
  std::atomic<size_t> next{0};
  auto claim = [&] {
    for (size_t i; (i = next++) < n;) run(i);
  };
  std::thread other(claim);
  claim();
  other.join();
}

}  // namespace moe::testing

#endif  // MOE_TESTING_TWO_THREADS_H_
