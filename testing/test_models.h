// Test fixtures' models and inputs: synthetic checkpoints in fresh temporary directories and
// deterministic random tokens.
#ifndef MOE_TESTING_TEST_MODELS_H_
#define MOE_TESTING_TEST_MODELS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "testing/synthetic_model.h"

namespace moe::testing {

// A new empty directory under the test temp dir, unique per call.
std::string MakeTempDir(const std::string& prefix);

// Writes preset `name` into a new temp directory and returns it. Fails the test if it cannot.
std::string WriteTestModel(const std::string& preset, const SyntheticModelOptions& options = {});

// n * d values, roughly standard normal, identical for identical (n, d, seed).
std::vector<float> RandomTokens(int64_t n, int64_t d, uint64_t seed);

}  // namespace moe::testing

#endif  // MOE_TESTING_TEST_MODELS_H_
