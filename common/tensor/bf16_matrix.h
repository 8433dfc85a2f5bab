// A matrix of bfloat16 weights in the layout the streaming FFN kernel reads fastest: half the bytes
// of float32, widened exactly to float32 in registers (a bf16 is the top half of a float32).
//
// Layout ("quads"): rows are taken four at a time; each quad is one contiguous run of memory, so
// streaming four rows at once is a single sequential read. Inside a quad, columns go in chunks of
// 16; a chunk holds 64 bf16 values: rows 0 and 1 interleaved element by element (32 values), then
// rows 2 and 3 the same way. As 32-bit lanes that is (row a | row b << 16), so one shift and one
// mask turn 512 loaded bits into 16 float32 values of each row, with no shuffles. Rows and columns
// are zero-padded to multiples of 4 and 16, and columns by 16 more where a quad would otherwise
// be a multiple of 4 KB long (512 columns): AMX tile loads read one row from each of 16 quads, and
// at such a stride those rows fall into one L1 set (measured: tile loads from L2 2.2× slower).
//
// Owns its storage; no synchronisation (read-only sharing is fine).
#ifndef MOE_COMMON_TENSOR_BF16_MATRIX_H_
#define MOE_COMMON_TENSOR_BF16_MATRIX_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "common/tensor/aligned_vector.h"
#include "common/tensor/matrix.h"

namespace moe {

class Bf16Matrix {
 public:
  static constexpr int64_t kQuadRows = 4;
  static constexpr int64_t kChunkCols = 16;
  static constexpr int64_t kAliasingCols = 512;  // 4 KB quads
  // The padded column count of a matrix of `cols` columns (see above).
  static int64_t PaddedCols(int64_t cols);

  Bf16Matrix() = default;
  // From row-major bf16 bit patterns (e.g. a BF16 checkpoint tensor), kept exactly.
  // `row_major.size()` must be rows * cols (the caller checks; a mismatch is a programming error).
  Bf16Matrix(int64_t rows, int64_t cols, absl::Span<const uint16_t> row_major);
  // Rounds every value to nearest bf16, ties to even (F32ToBf16).
  static Bf16Matrix RoundFrom(const Matrix& values);

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  uint16_t bits(int64_t r, int64_t c) const { return packed_[Offset(r, c)]; }
  float at(int64_t r, int64_t c) const;
  // The exact float32 values, row-major.
  Matrix ToF32() const;

  // For the kernels: columns padded (PaddedCols: a multiple of 16), and the start of quad g (rows
  // 4g..4g+3), quad_stride() values after quad g − 1.
  int64_t padded_cols() const { return padded_cols_; }
  int64_t quad_stride() const { return kQuadRows * padded_cols_; }
  const uint16_t* quad(int64_t g) const { return packed_.data() + g * quad_stride(); }
  // Bytes of storage (with padding), what a kernel streams.
  int64_t bytes() const { return static_cast<int64_t>(packed_.size() * sizeof(uint16_t)); }

 private:
  Bf16Matrix(int64_t rows, int64_t cols);
  int64_t Offset(int64_t r, int64_t c) const {
    return (r / kQuadRows) * quad_stride() + (c / kChunkCols) * (kQuadRows * kChunkCols) +
           (r % kQuadRows / 2) * (2 * kChunkCols) + (c % kChunkCols) * 2 + r % 2;
  }

  int64_t rows_ = 0;
  int64_t cols_ = 0;
  int64_t padded_cols_ = 0;
  AlignedVector<uint16_t>
      packed_;  // in the weight arena; quads start on cache lines (whole chunks)
};

}  // namespace moe

#endif  // MOE_COMMON_TENSOR_BF16_MATRIX_H_
