// Numbers in messages people read: "1 shard group", "3 calls", "393 KiB", "6.0 MiB".
#ifndef MOE_COMMON_CLI_HUMAN_UNITS_H_
#define MOE_COMMON_CLI_HUMAN_UNITS_H_

#include <cstdint>
#include <string>

namespace moe {

// "1 layer", "2 layers": `count`, a space, and `singular` or `plural`.
std::string CountOf(int64_t count, const std::string& singular, const std::string& plural);

// Binary units with about three significant digits: "512 B", "393 KiB", "6.00 MiB", "277 MiB",
// "1.50 GiB".
std::string FormatBytes(int64_t bytes);

}  // namespace moe

#endif  // MOE_COMMON_CLI_HUMAN_UNITS_H_
