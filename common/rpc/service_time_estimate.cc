#include "common/rpc/service_time_estimate.h"

#include <algorithm>

namespace moe {
namespace {

// Weight of the newest run time in its size class's average: about the last 8 calls count.
constexpr double kServiceWeight = 1.0 / 8;

int64_t AtLeastOne(int64_t tokens) { return std::max<int64_t>(tokens, 1); }

}  // namespace

int ServiceTimeEstimate::ClassOf(int64_t tokens) {
  int size_class = 0;
  for (uint64_t t = static_cast<uint64_t>(AtLeastOne(tokens)); t > 1; t >>= 1) ++size_class;
  return size_class;
}

void ServiceTimeEstimate::Record(int64_t tokens, absl::Duration took) {
  SizeClass& c = classes_[ClassOf(tokens)];
  const double t = static_cast<double>(AtLeastOne(tokens));
  c.tokens = c.measured ? c.tokens + (t - c.tokens) * kServiceWeight : t;
  c.service += (took - c.service) * kServiceWeight;
  c.measured = true;
}

void ServiceTimeEstimate::Set(int64_t tokens, absl::Duration service) {
  SizeClass& c = classes_[ClassOf(tokens)];
  c = {true, static_cast<double>(AtLeastOne(tokens)), service};
}

absl::Duration ServiceTimeEstimate::For(int64_t tokens) const {
  const int at = ClassOf(tokens);
  if (classes_[at].measured) return classes_[at].service;
  const SizeClass* below = nullptr;
  for (int c = at - 1; c >= 0 && below == nullptr; --c) {
    if (classes_[c].measured) below = &classes_[c];
  }
  const SizeClass* above = nullptr;
  for (int c = at + 1; c < static_cast<int>(classes_.size()) && above == nullptr; ++c) {
    if (classes_[c].measured) above = &classes_[c];
  }
  const double t = static_cast<double>(AtLeastOne(tokens));
  if (below != nullptr && above != nullptr) {
    const double along = (t - below->tokens) / (above->tokens - below->tokens);
    return below->service + (above->service - below->service) * std::clamp(along, 0.0, 1.0);
  }
  if (below != nullptr) return below->service;
  if (above != nullptr) return above->service * std::min(1.0, t / above->tokens);
  return absl::ZeroDuration();
}

}  // namespace moe
