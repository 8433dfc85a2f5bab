// A ShardClient for tests of the router's bookkeeping (replica choice, hedge delays) that must
// never reach a shard: it has a target and fails the test if it is called.
#ifndef MOE_TESTS_IDLE_SHARD_CLIENT_H_
#define MOE_TESTS_IDLE_SHARD_CLIENT_H_

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "router_service/shard_client.h"

namespace moe {

class IdleShardClient final : public ShardClient {
 public:
  explicit IdleShardClient(std::string target) : target_(std::move(target)) {}
  std::shared_ptr<ShardCall> Compute(const ShardCallInput&, absl::Time, Done) override {
    ADD_FAILURE() << "a shard of " << target_ << " was called";
    return nullptr;
  }
  void Describe(absl::Time, DescribeDone) override { ADD_FAILURE() << target_ << " described"; }
  const std::string& target() const override { return target_; }
  std::string State() const override { return "READY"; }

 private:
  const std::string target_;
};

}  // namespace moe

#endif  // MOE_TESTS_IDLE_SHARD_CLIENT_H_
