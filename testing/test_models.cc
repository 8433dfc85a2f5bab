#include "testing/test_models.h"

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace moe::testing {

std::string MakeTempDir(const std::string& prefix) {
  static std::atomic<int> counter{0};
  const std::string dir =
      absl::StrCat(::testing::TempDir(), "/moe_", prefix, "_", getpid(), "_", counter.fetch_add(1));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::string WriteTestModel(const std::string& preset, const SyntheticModelOptions& options) {
  const ModelPreset* found = FindPreset(preset);
  EXPECT_NE(found, nullptr) << "no preset " << preset;
  if (found == nullptr) return "";
  const std::string dir = MakeTempDir(preset);
  absl::Status written = WriteSyntheticModel(*found, options, dir);
  EXPECT_TRUE(written.ok()) << written;
  return dir;
}

std::vector<float> RandomTokens(int64_t n, int64_t d, uint64_t seed) {
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 12345;
  auto uniform = [&state] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return static_cast<float>(state >> 40) / float(1 << 24);
  };
  std::vector<float> values(n * d);
  for (float& v : values) v = (uniform() + uniform() + uniform() + uniform() - 2.0f) * 1.7320508f;
  return values;
}

}  // namespace moe::testing
