// AlignedVector (common/tensor/aligned_vector.h): every buffer starts on a cache line; scratch on
// the heap, weights packed into the weight arena's huge-page regions, which give freed memory back;
// and the matrices store their values so.
#include "common/tensor/aligned_vector.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
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

// Whether transparent huge pages are off on this machine (then nothing is advised for them).
bool HugePagesOff() {
  std::ifstream thp("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string modes;
  return !std::getline(thp, modes) || modes.find("[never]") != std::string::npos;
}

// The "Rss" of a smaps entry, in bytes.
int64_t RssBytes(const std::vector<std::string>& entry) {
  int64_t kb = -1;
  EXPECT_TRUE(absl::SimpleAtoi(absl::StripSuffix(Field(entry, "Rss"), " kB"), &kb));
  return kb * 1024;
}

TEST(AlignedVectorTest, WeightBuffersStartOnACacheLineAndCopiesStayWeights) {
  for (size_t n : {size_t{1}, size_t{3}, size_t{1000}, 3 * kHugePageBytes / sizeof(float) + 5}) {
    AlignedVector<float> v = WeightBuffer<float>(n);
    ASSERT_EQ(Address(v.data()) % kCacheLineBytes, 0u) << n;
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<float>(i);
    const AlignedVector<float> copy = v;
    EXPECT_EQ(copy.get_allocator().kind, BufferKind::kWeights);
    EXPECT_EQ(Address(copy.data()) % kCacheLineBytes, 0u) << n;
    for (size_t i = 0; i < n; i += 4099) ASSERT_EQ(copy[i], static_cast<float>(i));
    EXPECT_EQ(copy[n - 1], static_cast<float>(n - 1));
  }
  EXPECT_EQ(GetWeightArenaStats().live_bytes, 0u);
}

// Projections whose size is not a whole number of huge pages (Qwen3-30B-A3B's bf16 ones are 3 MB,
// its int8 ones 1.5 MB) are packed together into huge-page-aligned regions advised for huge pages,
// so none keeps a tail on small pages.
TEST(AlignedVectorTest, WeightBuffersArePackedIntoHugePageRegions) {
  if (HugePagesOff()) GTEST_SKIP() << "transparent huge pages are off here";
  const WeightArenaStats before = GetWeightArenaStats();
  std::vector<AlignedVector<uint16_t>> bf16;
  std::vector<AlignedVector<int8_t>> int8;
  for (int i = 0; i < 6; ++i) {
    bf16.push_back(WeightBuffer<uint16_t>(768 * 2048, 1));
    int8.push_back(WeightBuffer<int8_t>(768 * 2048, 1));
  }
  const WeightArenaStats after = GetWeightArenaStats();
  EXPECT_EQ(after.live_bytes - before.live_bytes, 6 * 768 * 2048 * 3u);
  EXPECT_LE(after.regions - before.regions, 1u) << "27 MB of buffers spread over regions";
  for (const void* data : {static_cast<const void*>(bf16[3].data()),  // mid-region
                           static_cast<const void*>(int8[5].data())}) {
    const std::vector<std::string> mapping = MappingOf(data);
    ASSERT_FALSE(mapping.empty());
    const std::vector<std::string> range =
        absl::StrSplit(mapping[0].substr(0, mapping[0].find(' ')), '-');
    uint64_t begin = 0, end = 0;
    ASSERT_TRUE(absl::SimpleHexAtoi(range[0], &begin) && absl::SimpleHexAtoi(range[1], &end));
    EXPECT_EQ(begin % kHugePageBytes, 0u);
    EXPECT_EQ(end % kHugePageBytes, 0u);
    // "hg" in VmFlags is MADV_HUGEPAGE; THPeligible says the kernel may use huge pages here.
    const std::vector<std::string> flags = absl::StrSplit(Field(mapping, "VmFlags"), ' ');
    EXPECT_NE(std::find(flags.begin(), flags.end(), "hg"), flags.end());
    EXPECT_EQ(Field(mapping, "THPeligible"), "1");
  }
}

// A freed weight buffer's whole huge pages go back to Linux at once, though its neighbours live on;
// the region is unmapped with the last of its buffers.
TEST(AlignedVectorTest, FreedWeightBuffersGiveTheirMemoryBack) {
  const WeightArenaStats before = GetWeightArenaStats();
  constexpr size_t kBytes = 4 * kHugePageBytes + 4096;
  auto first = std::make_unique<AlignedVector<char>>(WeightBuffer<char>(kBytes, 1));
  auto middle = std::make_unique<AlignedVector<char>>(WeightBuffer<char>(kBytes, 1));
  auto last = std::make_unique<AlignedVector<char>>(WeightBuffer<char>(kBytes, 1));
  const void* data = middle->data();
  const int64_t rss = RssBytes(MappingOf(data));
  ASSERT_GE(rss, static_cast<int64_t>(3 * kBytes));  // written by the constructors
  middle.reset();
  EXPECT_LE(RssBytes(MappingOf(data)), rss - static_cast<int64_t>(3 * kHugePageBytes))
      << "the freed buffer's whole huge pages (at least 3 of its 4 and a bit) are still resident";
  first.reset();
  last.reset();
  const WeightArenaStats after = GetWeightArenaStats();
  EXPECT_EQ(after.regions, before.regions);
  EXPECT_EQ(after.live_bytes, before.live_bytes);
  EXPECT_TRUE(MappingOf(data).empty()) << "the region outlived its buffers";
}

// Shards may load experts from several threads: buffers allocated and freed concurrently never
// overlap, and the arena ends empty.
TEST(AlignedVectorTest, WeightBuffersFromManyThreadsDoNotOverlap) {
  const WeightArenaStats before = GetWeightArenaStats();
  std::vector<std::thread> threads;
  std::atomic<int> corrupted{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t, &corrupted] {
      std::vector<std::pair<int, AlignedVector<int>>> held;  // each buffer's value, the buffer
      for (int i = 0; i < 40; ++i) {
        const int value = t * 1000 + i;
        held.emplace_back(value,
                          WeightBuffer<int>(static_cast<size_t>(1 + (i * 7919) % 300000), value));
        if (i % 3 == 0) held.erase(held.begin());  // frees interleave with other threads' work
      }
      for (const auto& [value, v] : held) {
        if (std::count(v.begin(), v.end(), value) != static_cast<ptrdiff_t>(v.size())) {
          ++corrupted;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(corrupted.load(), 0) << "a buffer was written through another";
  EXPECT_EQ(GetWeightArenaStats().live_bytes, before.live_bytes);
  EXPECT_EQ(GetWeightArenaStats().regions, before.regions);
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

TEST(AlignedVectorTest, MatricesStartOnACacheLineAndWeightsLiveInTheArena) {
  for (int64_t cols : {1, 100, 2048}) {
    const Matrix m(3, cols);
    EXPECT_EQ(Address(m.data()) % kCacheLineBytes, 0u) << cols;
    EXPECT_EQ(m.values().get_allocator().kind, BufferKind::kScratch);
    const Bf16Matrix b = Bf16Matrix::RoundFrom(m);
    EXPECT_EQ(Address(b.quad(0)) % kCacheLineBytes, 0u) << cols;
    const Matrix weights = m.CopyToWeightPages();
    EXPECT_EQ(Address(weights.data()) % kCacheLineBytes, 0u) << cols;
    EXPECT_EQ(weights.values().get_allocator().kind, BufferKind::kWeights);
    EXPECT_EQ(weights.rows(), 3);
    EXPECT_EQ(weights.cols(), cols);
  }
  const WeightArenaStats before = GetWeightArenaStats();
  const Bf16Matrix projection = Bf16Matrix::RoundFrom(Matrix(1024, 2048));  // OLMoE's, 4 MB
  EXPECT_EQ(GetWeightArenaStats().live_bytes - before.live_bytes,
            static_cast<size_t>(projection.bytes()));
}

}  // namespace
}  // namespace moe
