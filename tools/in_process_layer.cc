#include "tools/in_process_layer.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <numeric>
#include <thread>

#include "common/kernels/blas_kernels.h"
#include "common/kernels/swiglu_ffn.h"
#include "common/routing/routing.h"
#include "common/status/status_macros.h"

namespace moe {

absl::StatusOr<std::unique_ptr<InProcessLayer>> InProcessLayer::Load(const std::string& dir,
                                                                     int layer) {
  ASSIGN_OR_RETURN(std::unique_ptr<LayerLoader> loader, LayerLoader::Open(dir, layer));
  if (loader->config().shared.width > 0) {
    return absl::UnimplementedError("InProcessLayer benchmarks layers without shared experts");
  }
  ASSIGN_OR_RETURN(GateWeights gate, loader->LoadGate());
  std::vector<SwigluWeights> experts;
  for (int e = 0; e < loader->config().routing.num_experts; ++e) {
    ASSIGN_OR_RETURN(SwigluWeights weights, loader->LoadExpert(e));
    experts.push_back(std::move(weights));
  }
  return std::unique_ptr<InProcessLayer>(
      new InProcessLayer(loader->config(), std::move(gate), std::move(experts)));
}

absl::Status InProcessLayer::Forward(ConstMatrixView tokens, int top_k, int threads,
                                     MatrixView output) const {
  RoutingConfig routing_config = config_.routing;
  if (top_k > 0) routing_config.top_k = top_k;
  const int num_experts = routing_config.num_experts;
  Matrix logits(tokens.rows, num_experts);
  RETURN_IF_ERROR(MatMulTransposed(tokens, gate_.weight, logits.view()));
  ASSIGN_OR_RETURN(Routing routing, Route(routing_config, logits, gate_.correction_bias));

  // Tokens and weights of each expert.
  std::vector<std::vector<int64_t>> rows(num_experts);
  std::vector<std::vector<float>> weights(num_experts);
  for (int64_t t = 0; t < tokens.rows; ++t) {
    for (int j = 0; j < routing.top_k; ++j) {
      rows[routing.token_experts(t)[j]].push_back(t);
      weights[routing.token_experts(t)[j]].push_back(routing.token_weights(t)[j]);
    }
  }
  // Threads take experts largest first from a shared index (balanced however routing fell),
  // each into its own partial sum.
  std::vector<int> order(num_experts);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&rows](int a, int b) { return rows[a].size() > rows[b].size(); });
  std::atomic<int> next{0};
  std::vector<Matrix> partial(threads, Matrix(tokens.rows, tokens.cols));
  std::vector<absl::Status> status(threads);
  auto run = [&](int thread) {
    for (int i = next++; i < num_experts; i = next++) {
      const int e = order[i];
      if (rows[e].empty()) continue;
      Matrix x(static_cast<int64_t>(rows[e].size()), tokens.cols);
      Matrix y(x.rows(), tokens.cols);
      for (size_t i = 0; i < rows[e].size(); ++i) {
        std::memcpy(x.row(i), tokens.row(rows[e][i]), tokens.cols * sizeof(float));
      }
      status[thread] = SwigluForward(experts_[e], x, y.view());
      if (!status[thread].ok()) return;
      for (size_t i = 0; i < rows[e].size(); ++i) {
        float* out = partial[thread].row(rows[e][i]);
        for (int64_t c = 0; c < tokens.cols; ++c) out[c] += weights[e][i] * y.row(i)[c];
      }
    }
  };
  std::vector<std::thread> workers;
  for (int thread = 1; thread < threads; ++thread) workers.emplace_back(run, thread);
  run(0);
  for (std::thread& worker : workers) worker.join();
  for (const absl::Status& s : status) RETURN_IF_ERROR(s);
  for (int64_t i = 0; i < output.size(); ++i) {
    float sum = 0.0f;
    for (const Matrix& p : partial) sum += p.data()[i];
    output.data[i] = sum;
  }
  return absl::OkStatus();
}

}  // namespace moe
