#include "fuzz/fuzz_util.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <vector>

namespace moe::fuzz {
namespace {

std::vector<std::string>* ScratchDirs() {
  static auto* dirs = new std::vector<std::string>;
  return dirs;
}

void RemoveScratchDirs() {
  std::error_code ignored;
  for (const std::string& dir : *ScratchDirs()) std::filesystem::remove_all(dir, ignored);
}

}  // namespace

std::string ScratchDir(const std::string& name) {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/moe_fuzz_" + name + "_XXXXXX";
  Check(mkdtemp(pattern.data()) != nullptr, "cannot create a scratch directory " + pattern);
  if (ScratchDirs()->empty()) std::atexit(RemoveScratchDirs);
  ScratchDirs()->push_back(pattern);
  return pattern;
}

void WriteFile(const std::string& path, const uint8_t* data, size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  Check(f != nullptr, "cannot write " + path);
  const bool written = size == 0 || std::fwrite(data, 1, size, f) == size;
  Check(std::fclose(f) == 0 && written, "cannot write " + path);
}

void Check(bool condition, const std::string& message) {
  if (condition) return;
  std::fprintf(stderr, "fuzz invariant broken: %s\n", message.c_str());
  std::abort();
}

}  // namespace moe::fuzz
