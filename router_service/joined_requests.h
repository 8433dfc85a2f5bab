// Several Forward requests of one layer as the input of one fan-out, and each one's share of its
// answer: tokens and routings end to end, in request order. Plain data; no I/O.
#ifndef MOE_ROUTER_SERVICE_JOINED_REQUESTS_H_
#define MOE_ROUTER_SERVICE_JOINED_REQUESTS_H_

#include <cstdint>
#include <vector>

#include "common/routing/routing.h"
#include "common/tensor/matrix.h"

namespace moe {

class JoinedRequests {
 public:
  // One request's buffers; they must outlive the JoinedRequests.
  struct Part {
    ConstMatrixView input;       // [n, d]
    Routing* routing = nullptr;  // n tokens, as the fan-out's routing
    MatrixView output;           // [n, d]
  };

  // Copies every part's tokens and routing, in order; all parts have the same d and top_k.
  explicit JoinedRequests(std::vector<Part> parts);

  ConstMatrixView tokens() const { return tokens_.view(); }
  MatrixView output() { return output_.view(); }
  Routing& routing() { return routing_; }

  // Gives part `i` its rows of output() and its (renormalised) weights of routing(), and returns
  // those of the `missing` experts (ascending) that its tokens chose.
  std::vector<int> Split(size_t i, const std::vector<int>& missing) const;

 private:
  std::vector<Part> parts_;
  std::vector<int64_t> first_row_;  // of each part
  Matrix tokens_, output_;
  Routing routing_;
};

}  // namespace moe

#endif  // MOE_ROUTER_SERVICE_JOINED_REQUESTS_H_
