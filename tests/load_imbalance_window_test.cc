#include "common/metrics/load_imbalance_window.h"

#include <gtest/gtest.h>

#include <thread>

#include "common/metrics/metric_registry.h"

namespace moe {
namespace {

class LoadImbalanceWindowTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CounterFamily* tokens = registry_.AddCounter("t_total", "T.", {"expert"}).value();
    for (const char* e : {"0", "1", "2", "3"}) experts_.push_back(tokens->WithLabels({e}).value());
    gauge_ = registry_.AddGauge("imbalance", "I.").value()->WithLabels({}).value();
  }
  std::vector<const Counter*> Counters() const { return {experts_.begin(), experts_.end()}; }

  const absl::Time t0_ = absl::FromUnixSeconds(1000);
  MetricRegistry registry_;
  std::vector<Counter*> experts_;
  Gauge* gauge_ = nullptr;
};

TEST_F(LoadImbalanceWindowTest, PublishesMaxOverMeanOfTheLastWindowOnly) {
  experts_[0]->Increment(1000);  // before the first window: not counted
  LoadImbalanceWindow window(Counters(), gauge_, absl::Seconds(10), t0_);
  experts_[0]->Increment(40);
  experts_[1]->Increment(20);
  experts_[2]->Increment(20);
  window.MaybeRoll(t0_ + absl::Seconds(9));  // window still open
  EXPECT_EQ(gauge_->Value(), 0);
  window.MaybeRoll(t0_ + absl::Seconds(10));
  EXPECT_EQ(gauge_->Value(), 2.0);  // 40 / (80 / 4)

  for (Counter* c : experts_) c->Increment(5);
  window.MaybeRoll(t0_ + absl::Seconds(19));  // the next window ends at 20 s
  EXPECT_EQ(gauge_->Value(), 2.0);
  window.MaybeRoll(t0_ + absl::Seconds(20));
  EXPECT_EQ(gauge_->Value(), 1.0);

  window.MaybeRoll(t0_ + absl::Seconds(35));  // nothing counted
  EXPECT_EQ(gauge_->Value(), 0);
}

TEST_F(LoadImbalanceWindowTest, AWindowThatOverranAWholeLengthIsIdleNotImbalanced) {
  LoadImbalanceWindow window(Counters(), gauge_, absl::Seconds(10), t0_);
  for (Counter* c : experts_) c->Increment(10);
  window.MaybeRoll(t0_ + absl::Seconds(10));
  EXPECT_EQ(gauge_->Value(), 1.0);
  // Ten idle minutes, then one request choosing one expert: not an imbalance of 4.
  experts_[2]->Increment(1);
  window.MaybeRoll(t0_ + absl::Minutes(10));
  EXPECT_EQ(gauge_->Value(), 0);
  // Busy again: the next window measures as before.
  experts_[0]->Increment(30);
  experts_[1]->Increment(10);
  window.MaybeRoll(t0_ + absl::Minutes(10) + absl::Seconds(10));
  EXPECT_EQ(gauge_->Value(), 3.0);  // 30 / (40 / 4)
}

TEST_F(LoadImbalanceWindowTest, ConcurrentCallersCloseAWindowOnce) {
  LoadImbalanceWindow window(Counters(), gauge_, absl::Seconds(10), t0_);
  experts_[3]->Increment(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      for (int s = 0; s < 1000; ++s) window.MaybeRoll(t0_ + absl::Seconds(10));
    });
  }
  for (std::thread& t : threads) t.join();
  // Had a second caller closed a window at the same instant, it would have published 0.
  EXPECT_EQ(gauge_->Value(), 4.0);
}

}  // namespace
}  // namespace moe
