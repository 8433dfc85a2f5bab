// KeepFreedMemory and ReleaseFreedMemory (common/rpc/memory_policy.h), in a process of their own
// (gtest_discover_tests runs each test so): freed heap blocks stay resident under the first, and
// the second gives them back, as a server does once its weights are loaded.
#include "common/rpc/memory_policy.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

// Sanitizer builds (MOE_SANITIZE) replace glibc's allocator, which both functions configure.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MOE_GLIBC_MALLOC 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define MOE_GLIBC_MALLOC 0
#endif
#endif
#ifndef MOE_GLIBC_MALLOC
#define MOE_GLIBC_MALLOC 1
#endif

namespace moe {
namespace {

// This process's resident memory, from VmRSS in /proc/self/status.
int64_t ResidentBytes() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (!absl::StartsWith(line, "VmRSS:")) continue;
    const std::vector<std::string> fields =
        absl::StrSplit(line, ' ', absl::SkipWhitespace());  // "VmRSS:", value, "kB"
    int64_t kb = 0;
    if (fields.size() == 3 && absl::SimpleAtoi(fields[1], &kb)) return kb * 1024;
  }
  ADD_FAILURE() << "no VmRSS in /proc/self/status";
  return 0;
}

// Loading's pattern: many blocks of a few MB, written, then all freed. Returns the sum of each
// block's last byte, which the caller checks, so the writes cannot be optimised away.
int64_t AllocateWriteAndFree(int blocks, size_t bytes) {
  std::vector<std::unique_ptr<char[]>> held;
  for (int i = 0; i < blocks; ++i) {
    held.emplace_back(new char[bytes]);
    std::memset(held.back().get(), i + 1, bytes);
  }
  int64_t sum = 0;
  for (const auto& block : held) sum += block[bytes - 1];
  return sum;
}

TEST(MemoryPolicyTest, FreedBlocksStayUntilReleased) {
  if (!MOE_GLIBC_MALLOC) GTEST_SKIP() << "a sanitizer's allocator stands in for glibc's here";
  KeepFreedMemory();
  constexpr int kBlocks = 64;
  constexpr size_t kBytes = size_t{4} << 20;  // 256 MB in all, each under the mmap threshold
  const int64_t before = ResidentBytes();
  ASSERT_EQ(AllocateWriteAndFree(kBlocks, kBytes), kBlocks * (kBlocks + 1) / 2);
  const int64_t kept = ResidentBytes();
  EXPECT_GE(kept - before, kBlocks * static_cast<int64_t>(kBytes) * 9 / 10)
      << "freed heap blocks went back to the kernel under KeepFreedMemory";
  ReleaseFreedMemory();
  EXPECT_LE(ResidentBytes() - before, kBlocks * static_cast<int64_t>(kBytes) / 10)
      << "ReleaseFreedMemory kept the freed blocks resident";
}

}  // namespace
}  // namespace moe
