// Fuzzes ParseModelConfig on arbitrary config.json text, then asks which layers have an MoE
// block; an accepted config must describe a routable model.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/checkpoint/model_config.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = moe::ParseModelConfig(text, "config.json");
  if (!config.ok()) return 0;
  const moe::RoutingConfig& routing = config->routing;
  moe::fuzz::Check(config->d_model > 0 && routing.num_experts > 0 && routing.top_k > 0 &&
                       routing.top_k <= routing.num_experts,
                   "accepted a config without a routable shape");
  for (int layer : {0, 1, 2, 7, 1 << 20, -1}) (void)moe::CheckMoeLayer(*config, layer);
  return 0;
}
