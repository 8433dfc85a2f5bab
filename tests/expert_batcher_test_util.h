// The fakes of the ExpertBatcher tests (expert_batcher_test.cc, expert_batcher_deadline_test.cc):
// an expert whose output shows which expert computed which row, a caller's request, and an expert
// that blocks its first call until released.
#ifndef MOE_TESTS_EXPERT_BATCHER_TEST_UTIL_H_
#define MOE_TESTS_EXPERT_BATCHER_TEST_UTIL_H_

#include <atomic>
#include <numeric>
#include <vector>

#include "absl/synchronization/notification.h"
#include "expert_service/expert_batcher.h"

namespace moe::testing {

inline constexpr int64_t kStride = 8;  // the compute layout of these tests: 4 values, 4 of padding

// y = (expert + 1) * x + 0.5, so a scattered-back row shows whose it was and which expert ran.
inline absl::Status FakeExpert(int expert, ConstMatrixView x, MatrixView y) {
  for (int64_t t = 0; t < x.rows; ++t) {
    for (int64_t i = 0; i < x.cols; ++i) y.row(t)[i] = (expert + 1) * x.row(t)[i] + 0.5f;
  }
  return absl::OkStatus();
}

// A caller's request: `rows` tokens of width `cols`, computed in full (rows 0..n-1).
struct Request {
  Request(int rows, int cols, float base) : tokens(rows * cols), y(rows * cols), indices(rows) {
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = base + i;
    std::iota(indices.begin(), indices.end(), 0);
    this->cols = cols;
  }
  absl::Status Run(ExpertBatcher& batcher, int expert, const CallLimits& limits = {}) {
    const int64_t n = static_cast<int64_t>(indices.size());
    return batcher.Compute(expert, {tokens.data(), n, cols}, indices, {y.data(), n, cols}, limits);
  }
  // Whether y holds expert(x) for every row.
  bool Computed(int expert) const {
    for (size_t i = 0; i < y.size(); ++i) {
      if (y[i] != (expert + 1) * tokens[i] + 0.5f) return false;
    }
    return true;
  }
  std::vector<float> tokens, y;
  std::vector<int32_t> indices;
  int64_t cols;
};

// A compute function whose first call blocks until released, so a test knows the leader is
// inside compute (the expert busy) while it queues more calls.
class BlockingExpert {
 public:
  absl::Status operator()(int expert, ConstMatrixView x, MatrixView y) {
    if (calls_.fetch_add(1) == 0) {
      entered_.Notify();
      release_.WaitForNotification();
      return first(expert, x, y);
    }
    return rest(expert, x, y);
  }
  void AwaitFirst() { entered_.WaitForNotification(); }
  void Release() { release_.Notify(); }
  int calls() const { return calls_.load(); }
  ExpertBatcher::ComputeFn first = FakeExpert;  // what the first call computes
  ExpertBatcher::ComputeFn rest = FakeExpert;   // and every later one

 private:
  std::atomic<int> calls_{0};
  absl::Notification entered_, release_;
};

}  // namespace moe::testing

#endif  // MOE_TESTS_EXPERT_BATCHER_TEST_UTIL_H_
