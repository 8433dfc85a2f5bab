#include "router_service/joined_requests.h"

#include <algorithm>

namespace moe {

JoinedRequests::JoinedRequests(std::vector<Part> parts) : parts_(std::move(parts)) {
  int64_t rows = 0;
  for (const Part& part : parts_) {
    first_row_.push_back(rows);
    rows += part.input.rows;
  }
  const int64_t d = parts_.front().input.cols;
  tokens_ = Matrix(rows, d);
  output_ = Matrix(rows, d);
  routing_.num_tokens = rows;
  routing_.top_k = parts_.front().routing->top_k;
  for (size_t i = 0; i < parts_.size(); ++i) {
    const Part& part = parts_[i];
    for (int64_t t = 0; t < part.input.rows; ++t) {
      std::copy(part.input.row(t), part.input.row(t) + d, tokens_.row(first_row_[i] + t));
    }
    const Routing& routing = *part.routing;
    routing_.experts.insert(routing_.experts.end(), routing.experts.begin(), routing.experts.end());
    routing_.weights.insert(routing_.weights.end(), routing.weights.begin(), routing.weights.end());
  }
}

std::vector<int> JoinedRequests::Split(size_t i, const std::vector<int>& missing) const {
  const Part& part = parts_[i];
  const int64_t first = first_row_[i], d = output_.cols();
  for (int64_t t = 0; t < part.input.rows; ++t) {
    std::copy(output_.row(first + t), output_.row(first + t) + d, part.output.row(t));
  }
  const auto weights = routing_.weights.begin() + first * routing_.top_k;
  std::copy(weights, weights + part.input.rows * routing_.top_k, part.routing->weights.begin());
  std::vector<int> chosen_missing;
  const std::vector<int>& chosen = part.routing->experts;
  for (int expert : missing) {
    if (std::find(chosen.begin(), chosen.end(), expert) != chosen.end()) {
      chosen_missing.push_back(expert);
    }
  }
  return chosen_missing;
}

}  // namespace moe
