// Helpers shared by the libFuzzer targets: a scratch directory for parsers that read files, and
// a check that aborts (a crash libFuzzer reports) when an invariant of the code under test fails.
#ifndef MOE_FUZZ_FUZZ_UTIL_H_
#define MOE_FUZZ_FUZZ_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace moe::fuzz {

// A fresh directory under $TMPDIR (default /tmp), removed at exit.
std::string ScratchDir(const std::string& name);

// Replaces `path` with `size` bytes of `data`; aborts if it cannot.
void WriteFile(const std::string& path, const uint8_t* data, size_t size);

// Aborts with `message` when `condition` is false: a broken invariant is a finding.
void Check(bool condition, const std::string& message);

}  // namespace moe::fuzz

#endif  // MOE_FUZZ_FUZZ_UTIL_H_
