// How long a call of a given size (its tokens) is expected to run, from the run times of recent
// calls: what AdmissionQueue compares a call's remaining deadline against. One mean over all
// calls is wrong both ways when sizes mix (one-token decode calls between 256-token prefill
// calls): after large calls it refuses a small call whose deadline it would easily meet, and after
// small ones it admits a large call that can only expire. So run times are kept per size class:
// tokens in powers of two (1, 2-3, 4-7, ..., 256-511, ...), each a moving average of about its
// last 8 calls, rising from zero (a size's first calls count for little, so an untypical cold
// call cannot get calls refused).
//
// A size with no calls of its own yet is estimated from its neighbours, never above what they
// support: between two measured classes, linearly in tokens (an expert layer's cost grows less
// than linearly with tokens, so the line lies below it); above the largest, the largest's time;
// below the smallest, the smallest's time scaled down by tokens. An estimate may be low, so a
// call may be admitted that then runs out of deadline; it is never refused on a guess above what
// was measured. Zero before any call finished (nothing is refused for time).
//
// Not thread-safe: AdmissionQueue holds it under its lock.
#ifndef MOE_COMMON_RPC_SERVICE_TIME_ESTIMATE_H_
#define MOE_COMMON_RPC_SERVICE_TIME_ESTIMATE_H_

#include <array>
#include <cstdint>

#include "absl/time/time.h"

namespace moe {

class ServiceTimeEstimate {
 public:
  // A call of `tokens` (< 1 counts as 1) ran for `took`.
  void Record(int64_t tokens, absl::Duration took);
  // The expected run time of a call of `tokens` (< 1 counts as 1).
  absl::Duration For(int64_t tokens) const;
  // Sets the size class of `tokens` to `service` outright, as if measured many times.
  void Set(int64_t tokens, absl::Duration service);

 private:
  struct SizeClass {
    bool measured = false;
    double tokens = 0;  // moving average of its calls' tokens: where it sits on the line
    absl::Duration service = absl::ZeroDuration();
  };
  static int ClassOf(int64_t tokens);

  std::array<SizeClass, 64> classes_;  // class c: tokens in [2^c, 2^(c+1))
};

}  // namespace moe

#endif  // MOE_COMMON_RPC_SERVICE_TIME_ESTIMATE_H_
