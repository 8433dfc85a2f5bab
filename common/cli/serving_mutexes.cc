#include "common/cli/serving_mutexes.h"

#include "absl/synchronization/mutex.h"

namespace moe {

void UseServingMutexes() { absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore); }

}  // namespace moe
