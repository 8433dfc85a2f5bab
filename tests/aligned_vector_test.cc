// AlignedVector and WeightVector (common/tensor/aligned_vector.h): every buffer starts on a cache
// line; a WeightVector of 2 MB and more on a huge page boundary in a mapping of its own that Linux
// may back with huge pages, an AlignedVector on the heap; and the matrices store their values so.
#include "common/tensor/aligned_vector.h"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/tensor/bf16_matrix.h"
#include "common/tensor/matrix.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

uintptr_t Address(const void* p) { return reinterpret_cast<uintptr_t>(p); }

// The /proc/self/smaps entry of the mapping holding `p`, its lines in order; empty if none.
std::vector<std::string> MappingOf(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  std::vector<std::string> entry;
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    const std::vector<std::string> range = absl::StrSplit(line.substr(0, line.find(' ')), '-');
    uint64_t begin = 0, end = 0;
    if (range.size() == 2 && absl::SimpleHexAtoi(range[0], &begin) &&
        absl::SimpleHexAtoi(range[1], &end)) {
      if (inside) return entry;
      inside = begin <= Address(p) && Address(p) < end;
    }
    if (inside) entry.push_back(line);
  }
  return entry;
}

// The value of field `name` ("THPeligible", "VmFlags") in a smaps entry, spaces trimmed.
std::string Field(const std::vector<std::string>& entry, absl::string_view name) {
  for (const std::string& line : entry) {
    if (absl::StartsWith(line, absl::StrCat(name, ":"))) {
      return std::string(absl::StripAsciiWhitespace(line.substr(name.size() + 1)));
    }
  }
  return "";
}

TEST(AlignedVectorTest, SmallBuffersStartOnACacheLine) {
  for (size_t n : {1, 3, 17, 1000, 100000}) {
    AlignedVector<float> v(n, 1.5f);
    EXPECT_EQ(Address(v.data()) % kCacheLineBytes, 0u) << n;
    AlignedVector<uint16_t> w(n, 7);
    EXPECT_EQ(Address(w.data()) % kCacheLineBytes, 0u) << n;
  }
}

TEST(AlignedVectorTest, LargeWeightBuffersStartOnAHugePageAndKeepTheirValues) {
  const size_t n = 3 * kHugePageBytes / sizeof(float) + 5;  // not a whole number of huge pages
  WeightVector<float> v(n);
  ASSERT_EQ(Address(v.data()) % kHugePageBytes, 0u);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<float>(i);
  const WeightVector<float> copy = v;
  EXPECT_EQ(Address(copy.data()) % kHugePageBytes, 0u);
  for (size_t i = 0; i < n; i += 4099) ASSERT_EQ(copy[i], static_cast<float>(i));
  EXPECT_EQ(copy[n - 1], static_cast<float>(n - 1));
}

TEST(AlignedVectorTest, LargeWeightBuffersAreAdvisedForHugePagesAndUnmappedWhenFreed) {
  std::ifstream thp("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string modes;
  if (!std::getline(thp, modes) || modes.find("[never]") != std::string::npos) {
    GTEST_SKIP() << "transparent huge pages are off here (" << modes << ")";
  }
  const void* data = nullptr;
  {
    WeightVector<uint16_t> v(4 * kHugePageBytes / sizeof(uint16_t), 1);
    data = v.data();
    const std::vector<std::string> mapping = MappingOf(data);
    ASSERT_FALSE(mapping.empty());
    // "hg" in VmFlags is MADV_HUGEPAGE; THPeligible says the kernel may use huge pages here.
    const std::vector<std::string> flags = absl::StrSplit(Field(mapping, "VmFlags"), ' ');
    EXPECT_NE(std::find(flags.begin(), flags.end(), "hg"), flags.end());
    EXPECT_EQ(Field(mapping, "THPeligible"), "1");
  }
  EXPECT_TRUE(MappingOf(data).empty()) << "the buffer's mapping outlived it";
}

// A call's scratch is freed and allocated again on every call: from the heap, which keeps it
// (memory_policy.h), not a mapping that would be faulted in each time.
TEST(AlignedVectorTest, LargeScratchBuffersStayOnTheHeap) {
  AlignedVector<float> scratch(4 * kHugePageBytes / sizeof(float), 1.0f);
  EXPECT_EQ(Address(scratch.data()) % kCacheLineBytes, 0u);
  const std::vector<std::string> flags =
      absl::StrSplit(Field(MappingOf(scratch.data()), "VmFlags"), ' ');
  EXPECT_EQ(std::find(flags.begin(), flags.end(), "hg"), flags.end());
}

TEST(AlignedVectorTest, MatricesStartOnACacheLine) {
  for (int64_t cols : {1, 100, 2048}) {
    const Matrix m(3, cols);
    EXPECT_EQ(Address(m.data()) % kCacheLineBytes, 0u) << cols;
    const Bf16Matrix b = Bf16Matrix::RoundFrom(m);
    EXPECT_EQ(Address(b.quad(0)) % kCacheLineBytes, 0u) << cols;
  }
  const Bf16Matrix projection = Bf16Matrix::RoundFrom(Matrix(1024, 2048));  // OLMoE's, 4 MB
  EXPECT_EQ(Address(projection.quad(0)) % kHugePageBytes, 0u);
}

}  // namespace
}  // namespace moe
