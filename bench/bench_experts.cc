#include "bench/bench_experts.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>

#include "common/kernels/blas_kernels.h"
#include "common/kernels/cpu_affinity.h"
#include "common/kernels/row_dot_kernel.h"
#include "common/kernels/thread_pool.h"
#include "common/tensor/aligned_vector.h"

namespace moe::bench {
namespace {

int64_t bandwidth_bytes = int64_t{256} << 20;
int64_t BandwidthFloats() { return BandwidthBytes() / static_cast<int64_t>(sizeof(float)); }
constexpr int64_t kSumTaskFloats = int64_t{1} << 18;  // 1 MB

void Check(const absl::Status& status) {
  if (!status.ok()) {
    std::cerr << "benchmark set-up failed: " << status << std::endl;
    std::abort();
  }
}

// The read passes' buffer, laid out as the weights are at best (a WeightBuffer: cache-line aligned,
// on huge pages where Linux gives them). At malloc's 16-byte offset every 64-byte load straddles
// two cache lines, and the passes measured less than the kernels then read from weights (on a
// Zen 5, 50-54 GB/s against an fp32 FFN call streaming 70-76): a fraction of it above 1.
const AlignedVector<float>& BandwidthBuffer() {
  static const AlignedVector<float>* buffer =
      new AlignedVector<float>(WeightBuffer<float>(BandwidthFloats(), 1.0f));
  return *buffer;
}

std::unique_ptr<KernelThreadPool>& PoolSlot() {
  static auto* pool = new std::unique_ptr<KernelThreadPool>;  // never destroyed: helpers
  return *pool;
}

const std::vector<Matrix>& StackedGateUp() {
  static std::vector<Matrix>* stacked = [] {
    auto* out = new std::vector<Matrix>;
    for (const SwigluWeights& experts : Experts(WeightStorage::kF32)) {
      const SwigluWeights::F32& w = *experts.f32();
      Matrix m(2 * kWidth, kDModel);
      std::copy(w.gate.data(), w.gate.data() + w.gate.size(), m.data());
      std::copy(w.up.data(), w.up.data() + w.up.size(), m.data() + w.gate.size());
      out->push_back(std::move(m));
    }
    return out;
  }();
  return *stacked;
}

}  // namespace

Matrix Filled(int64_t rows, int64_t cols, float scale, uint64_t seed) {
  Matrix m(rows, cols);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int64_t i = 0; i < m.size(); ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    m.data()[i] = scale * (static_cast<float>(s >> 40) * (2.0f / 16777216.0f) - 1.0f);
  }
  return m;
}

int64_t BandwidthBytes() { return bandwidth_bytes; }

void SetBandwidthBytes(int64_t bytes) {
  constexpr int64_t kUnit = int64_t{32} << 20;
  bandwidth_bytes = std::max(kUnit, bytes / kUnit * kUnit);
}

void InitThreads(int threads) {
  if (threads <= 0) threads = std::max(1, static_cast<int>(AllowedCpus().size()));
  PoolSlot() = std::make_unique<KernelThreadPool>(threads);
  SetBlasThreads(threads);
}

int Threads() { return Pool().threads(); }

KernelThreadPool& Pool() {
  if (PoolSlot() == nullptr) InitThreads(0);
  return *PoolSlot();
}

SwigluOptions PoolOptions(SwigluPath path) {
  SwigluOptions options;
  options.path = path;
  options.pool = &Pool();
  return options;
}

const std::vector<SwigluWeights>& Experts(WeightStorage storage) {
  static std::map<WeightStorage, std::vector<SwigluWeights>>* experts =
      new std::map<WeightStorage, std::vector<SwigluWeights>>;
  std::vector<SwigluWeights>& set = (*experts)[storage];
  if (set.empty()) {
    const float scale_in = 1.0f / 32.0f, scale_hidden = 1.0f / 53.0f;
    for (int e = 0; e < kExperts; ++e) {
      auto w = SwigluWeights::FromF32(Filled(kWidth, kDModel, scale_in, 3 * e + 1),
                                      Filled(kWidth, kDModel, scale_in, 3 * e + 2),
                                      Filled(kDModel, kWidth, scale_hidden, 3 * e + 3), storage);
      Check(w.status());
      set.push_back(*std::move(w));
    }
  }
  return set;
}

Matrix Tokens(int64_t tokens) { return Filled(tokens, kDModel, 1.0f, 99); }

namespace {

// The sum of one Sum task's kSumTaskFloats floats from `p`, read as `streams` runs side by side.
// The prefetch is a template argument: a branch in the loop kept the compiler from vectorising it.
template <bool kPrefetch>
float SumTask(const float* p, int streams) {
  constexpr int64_t kPrefetchFloats = 256;  // 1 KB ahead, as the kernels
  const int64_t run = kSumTaskFloats / streams;
  float lanes[16] = {};
  for (int64_t i = 0; i < run; i += 16) {
    for (int s = 0; s < streams; ++s) {
      const float* line = p + s * run + i;
      if constexpr (kPrefetch) __builtin_prefetch(line + kPrefetchFloats);
      for (int l = 0; l < 16; ++l) lanes[l] += line[l];
    }
  }
  float sum = 0;
  for (float v : lanes) sum += v;
  return sum;
}

}  // namespace

void ReadBufferBySum(SumReads reads) {
  const AlignedVector<float>& buffer = BandwidthBuffer();
  const int64_t tasks = BandwidthFloats() / kSumTaskFloats;
  static std::vector<float>* partial = new std::vector<float>(tasks);
  auto sum_blocks = [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      const float* p = buffer.data() + block * kSumTaskFloats;
      // Kept, so the reads cannot be optimised away.
      (*partial)[block] =
          reads.prefetch ? SumTask<true>(p, reads.streams) : SumTask<false>(p, reads.streams);
    }
  };
  const KernelThreadPool::Phase phases[] = {{tasks, 1, sum_blocks}};
  Pool().Run(phases);
}

void ReadBufferByRowDots() {
  constexpr int64_t kCols = 8192, kTasks = 64;
  const AlignedVector<float>& buffer = BandwidthBuffer();
  const int64_t rows = BandwidthFloats() / kCols;
  static std::vector<float>* x = new std::vector<float>(kCols, 1.0f);
  static std::vector<float>* y = new std::vector<float>(rows);
  const RowDotKernels& k = BestRowDotKernels();
  auto dots = [&](int64_t r0, int64_t r1) {
    k.dots_f32(buffer.data() + r0 * kCols, kCols, r1 - r0, kCols, x->data(), kCols, 1,
               y->data() + r0, 1);
  };
  const KernelThreadPool::Phase phases[] = {{rows, std::max<int64_t>(1, rows / kTasks), dots}};
  Pool().Run(phases);
}

double MeasureReadBandwidth(int rounds) {
  double best = MedianSeconds([](int) { ReadBufferByRowDots(); }, 1, rounds);
  for (const SumReads& reads : kSumReads) {
    best = std::min(best, MedianSeconds([&](int) { ReadBufferBySum(reads); }, 1, rounds));
  }
  return static_cast<double>(BandwidthBytes()) / best;
}

void ReadBufferBySgemv() {
  const AlignedVector<float>& buffer = BandwidthBuffer();
  constexpr int64_t kCols = 8192;
  const int64_t rows = BandwidthFloats() / kCols;
  static std::vector<float>* x = new std::vector<float>(kCols, 1.0f);
  static std::vector<float>* y = new std::vector<float>(rows);
  cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, kCols, 1.0f, buffer.data(), kCols, x->data(), 1,
              0.0f, y->data(), 1);
}

void PlainSgemm(int e, const Matrix& x, bool stacked) {
  static Matrix* gate_up = new Matrix;
  if (gate_up->rows() != x.rows()) *gate_up = Matrix(x.rows(), 2 * kWidth);
  static Matrix* gate = new Matrix;
  static Matrix* up = new Matrix;
  if (gate->rows() != x.rows()) {
    *gate = Matrix(x.rows(), kWidth);
    *up = Matrix(x.rows(), kWidth);
  }
  const SwigluWeights::F32& w = *Experts(WeightStorage::kF32)[e % kExperts].f32();
  if (stacked) {
    Check(MatMulTransposed(x, StackedGateUp()[e % kExperts], gate_up->view()));
    // down reads the gate half; the shapes match act·downᵀ.
    Check(MatMulTransposed(ConstMatrixView{gate_up->data(), x.rows(), kWidth}, w.down,
                           MatrixView{gate->data(), x.rows(), kDModel}));
    return;
  }
  Check(MatMulTransposed(x, w.gate, gate->view()));
  Check(MatMulTransposed(x, w.up, up->view()));
  Check(MatMulTransposed(*gate, w.down, MatrixView{up->data(), x.rows(), kDModel}));
}

double MedianSeconds(const std::function<void(int)>& fn, int calls, int rounds) {
  fn(0);
  std::vector<double> per_call;
  int index = 1;
  for (int r = 0; r < rounds; ++r) {
    const auto start = std::chrono::steady_clock::now();
    for (int c = 0; c < calls; ++c) fn(index++);
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    per_call.push_back(elapsed.count() / calls);
  }
  std::sort(per_call.begin(), per_call.end());
  return per_call[per_call.size() / 2];
}

}  // namespace moe::bench
