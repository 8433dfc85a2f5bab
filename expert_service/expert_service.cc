#include "expert_service/expert_service.h"

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/checkpoint/model_config.h"
#include "common/kernels/blas_kernels.h"
#include "common/rpc/cancellation_poll.h"
#include "common/rpc/grpc_status.h"
#include "common/rpc/tensor_proto.h"
#include "common/status/status_macros.h"
#include "common/tensor/finite.h"
#include "common/tensor/weighted_rows.h"
#include "expert_service/compute_bounds.h"

namespace moe {
namespace {

// Staged outputs a wave of a call's groups may hold, in rows, whatever the call's token count
// (8 MB at d_model 2048): every group of a decode call fits one wave.
constexpr int64_t kMinStagedRowsPerWave = 1024;

TensorEncoding ReplyEncoding(const v1::ComputeRequest& request) {
  switch (request.reply_encoding()) {
    case v1::TENSOR_ENCODING_F32:
      return TensorEncoding::kF32;
    case v1::TENSOR_ENCODING_BF16:
      return TensorEncoding::kBf16;
    default:  // VALUES, or a value this shard does not know: the one every router reads
      return TensorEncoding::kValues;
  }
}

// Replaces whatever the reply holds with the report of one overflowing row.
void ReportOverflow(int row, int expert, bool in_sum, v1::ComputeResponse* response) {
  response->Clear();
  v1::Overflow* overflow = response->add_overflows();
  overflow->set_row(row);
  overflow->set_expert(expert);
  overflow->set_in_sum(in_sum);
}

// The batcher's options as this shard runs them: its kernel threads, a call's groups one per
// kernel thread where that pays, and the metrics.
BatchingOptions ForShard(BatchingOptions batching, const ExpertShard* shard,
                         const ExpertMetrics* metrics) {
  if (batching.metrics == nullptr && metrics != nullptr) batching.metrics = metrics->batcher();
  batching.kernel_threads = shard->kernel_threads();
  batching.across_threads = [shard](absl::Span<const int> ffns, absl::Span<const int64_t> tokens,
                                    absl::FunctionRef<void(size_t)> run) {
    return shard->RunAcrossThreads(ffns, tokens, run);
  };
  return batching;
}

}  // namespace

ExpertServiceImpl::ExpertServiceImpl(const ExpertShard* shard, BatchingOptions batching,
                                     AdmissionGate* gate, int64_t max_rows_per_call,
                                     ExpertMetrics* metrics)
    : shard_(shard),
      gate_(gate != nullptr ? gate : &unlimited_),
      max_rows_per_call_(max_rows_per_call),
      metrics_(metrics),
      batcher_(
          [shard](int ffn, ConstMatrixView x, MatrixView y) { return shard->Compute(ffn, x, y); },
          shard->input_stride(), ForShard(std::move(batching), shard, metrics)) {}

absl::Status ExpertServiceImpl::RunGroups(const v1::ComputeRequest& request,
                                          const CallLimits& limits, v1::ComputeResponse* response) {
  const int64_t d = shard_->config().d_model;
  const std::vector<int>& layers = shard_->layers();
  if (!std::binary_search(layers.begin(), layers.end(), request.layer())) {
    return absl::FailedPreconditionError(
        absl::StrCat("layer ", request.layer(), " is not held by this shard (it holds layers ",
                     absl::StrJoin(layers, ","), ")"));
  }
  std::vector<float> widened;  // bf16 tokens as float32
  ASSIGN_OR_RETURN(ConstMatrixView tokens,
                   MatrixFromProto(request.tokens(), -1, d, "tokens", &widened));
  ASSIGN_OR_RETURN(std::vector<int> ffns,
                   CheckComputeWork(*shard_, request, tokens.rows, max_rows_per_call_));
  const TensorEncoding encoding = ReplyEncoding(request);
  const bool sum_groups = request.sum_groups();
  // Each group's output: straight into the reply when it goes there as float32, else here.
  Matrix sum(sum_groups ? tokens.rows : 0, d);
  const bool staged_outputs = sum_groups || encoding == TensorEncoding::kBf16;
  // Where the values the reply carries first cannot be read back: a NaN or an infinity, and in
  // bf16 also a finite float32 too large for it (F32ToBf16 rounds it to infinity).
  int64_t (*const first_unreadable)(absl::Span<const float>) =
      encoding == TensorEncoding::kBf16 ? FirstNonFiniteAsBf16 : FirstNonFinite;
  // The groups go to the batcher in waves that join their experts' queues at once, so other
  // calls' batches can take any of them (ExpertBatcher::ComputeGroups). A decode call's groups
  // are one wave; a large call's staged outputs stay within about its input's size per wave.
  const int64_t staged_rows_per_wave = std::max<int64_t>(tokens.rows, kMinStagedRowsPerWave);
  bool sum_finite = true;  // no wave so far left an unreadable value in the sum
  for (int g0 = 0, g1 = 0; g0 < request.groups_size(); g0 = g1) {
    int64_t rows = 0;
    while (g1 < request.groups_size() &&
           (g1 == g0 || !staged_outputs ||
            rows + request.groups(g1).rows_size() <= staged_rows_per_wave)) {
      rows += request.groups(g1++).rows_size();
    }
    std::vector<Matrix> staged;
    staged.reserve(staged_outputs ? g1 - g0 : 0);
    std::vector<ExpertBatcher::Group> work;
    work.reserve(g1 - g0);
    for (int g = g0; g < g1; ++g) {
      const v1::ExpertGroup& group = request.groups(g);
      MatrixView y;
      if (staged_outputs) {
        y = staged.emplace_back(group.rows_size(), d).view();
      } else {
        y = ResizeProtoTensor(response->add_outputs(), group.rows_size(), d, encoding);
      }
      work.push_back({ffns[g], absl::MakeConstSpan(group.rows().data(), group.rows_size()), y});
    }
    // The batcher gathers the rows (once, into the kernel's layout) when it computes them.
    RETURN_IF_ERROR(batcher_.ComputeGroups(tokens, work, limits));
    // Finite input, output the reply cannot carry (not finite, or in bf16 too large for it): the
    // input is too large for that expert. The first such group (in request order) is reported so
    // the router can name the token to its caller, instead of a malformed reply (or, in bf16, an
    // infinity the router would take for one). Summed groups are scanned only when the sum is not:
    // a NaN or infinity in a group's output always reaches the sum (w · ±∞ and 0 · ∞ are not
    // finite), so a finite sum clears every group summed into it.
    auto report_first_group_where = [&](int64_t (*first_bad)(absl::Span<const float>)) {
      for (int g = g0; g < g1; ++g) {
        const ConstMatrixView y = work[g - g0].y;
        if (const int64_t i = first_bad(absl::MakeConstSpan(y.data, y.size())); i >= 0) {
          ReportOverflow(request.groups(g).rows(i / d), request.groups(g).expert(),
                         /*in_sum=*/false, response);
          return true;
        }
      }
      return false;
    };
    if (metrics_ != nullptr) {
      for (int g = g0; g < g1; ++g)
        metrics_->TokensComputed(ffns[g], request.groups(g).rows_size());
    }
    if (!sum_groups && report_first_group_where(first_unreadable)) return absl::OkStatus();
    for (int g = g0; g < g1; ++g) {
      const v1::ExpertGroup& group = request.groups(g);
      const ConstMatrixView y = work[g - g0].y;
      if (sum_groups) {
        AddWeightedRows<int32_t>(y, group.rows(), group.weights(), sum.view());
      } else if (encoding == TensorEncoding::kBf16) {
        WriteProtoTensor(y, encoding, response->add_outputs());
      }
    }
    if (sum_groups) {
      sum_finite = sum_finite && first_unreadable(absl::MakeConstSpan(sum.data(), sum.size())) < 0;
      if (!sum_finite && report_first_group_where(FirstNonFinite)) return absl::OkStatus();
    }
  }
  if (sum_groups) {
    if (!sum_finite) {  // with every group's output finite: the weighted sum itself overflowed
      const int64_t i = first_unreadable(absl::MakeConstSpan(sum.data(), sum.size()));
      ReportOverflow(static_cast<int>(i / d), 0, /*in_sum=*/true, response);
      return absl::OkStatus();
    }
    WriteProtoTensor(sum.view(), encoding, response->mutable_sum());
  }
  return absl::OkStatus();
}

grpc::Status ExpertServiceImpl::Compute(grpc::ServerContext* context,
                                        const v1::ComputeRequest* request,
                                        v1::ComputeResponse* response) {
  absl::StatusOr<AdmissionGate::Ticket> ticket = gate_->TryEnter();
  absl::Status status = ticket.status();
  if (ticket.ok()) {
    compute_calls_.fetch_add(1, std::memory_order_relaxed);
    CallLimits limits;  // none without a context (a direct call, as in tests)
    std::optional<CancellationPoll> client_gone;
    if (context != nullptr) {
      // No client deadline arrives as time_point::max(), which absl::FromChrono would overflow.
      if (context->deadline() < std::chrono::system_clock::time_point::max()) {
        limits.deadline = absl::FromChrono(context->deadline());
      }
      client_gone.emplace([context] { return context->IsCancelled(); }, kCancellationPollInterval);
      limits.cancelled = [&client_gone] { return client_gone->Cancelled(); };
    }
    status = RunGroups(*request, limits, response);
  }
  return ToGrpcStatus(status);
}

grpc::Status ExpertServiceImpl::Info(grpc::ServerContext*, const v1::ExpertInfoRequest*,
                                     v1::ExpertInfo* response) {
  const ModelIdentity& identity = shard_->identity();
  response->set_family(identity.family);
  response->set_layer(shard_->layers().front());
  response->mutable_layers()->Add(shard_->layers().begin(), shard_->layers().end());
  response->set_d_model(identity.d_model);
  response->set_expert_width(identity.expert_width);
  response->set_num_experts(identity.num_experts);
  response->set_model_fingerprint(identity.fingerprint);
  response->set_kernels(KernelsReport());
  response->set_reads_tensor_bytes(true);
  for (int e : shard_->experts().ids) response->add_experts(e);
  response->set_shared_expert(shard_->experts().shared);
  response->set_weight_bytes(shard_->weight_bytes());
  response->set_compute_calls(compute_calls_.load(std::memory_order_relaxed));
  const BatchingStats stats = batcher_.stats();
  response->set_ffn_batches(stats.batches);
  response->set_ffn_tokens(stats.tokens);
  response->set_largest_batch(stats.largest_batch);
  return grpc::Status::OK;
}

CallObservers ComputeCallObservers(ExpertMetrics* metrics) {
  if (metrics == nullptr) return {};
  return {{absl::StrCat("/", v1::Expert::service_full_name(), "/Compute"),
           {nullptr, [metrics](absl::StatusCode code, absl::Duration latency) {
              metrics->CallFinished(code, latency);
            }}}};
}

}  // namespace moe
