// What the AMX kernels (bf16_dot_kernel_amx*.cc) share: the tile
// configuration they load, and whether this process may run AMX tile instructions at all.
//
// Linux (5.16+) gives a process the AMX tile data state only on request (arch_prctl
// ARCH_REQ_XCOMP_PERM); AmxTileStateGranted() asks once per process and remembers the answer.
// Thread-safe.
#ifndef MOE_COMMON_KERNELS_AMX_TILES_H_
#define MOE_COMMON_KERNELS_AMX_TILES_H_

#include <cstdint>

namespace moe {

// The LDTILECFG operand (Intel SDM vol. 1, 3.2: palette 1). Tiles not set stay unconfigured.
struct alignas(64) AmxTileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};

  // Tile `tile` (0-7) as `tile_rows` (≤ 16) rows of `bytes` (≤ 64) bytes.
  AmxTileConfig& Set(int tile, int tile_rows, int bytes) {
    rows[tile] = static_cast<uint8_t>(tile_rows);
    bytes_per_row[tile] = static_cast<uint16_t>(bytes);
    return *this;
  }
};

// CPUID leaf 7: AMX-TILE with AMX-BF16. False off x86-64.
bool CpuHasAmxBf16();

// Whether Linux granted this process the AMX tile data state (asked on the first call).
bool AmxTileStateGranted();

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_AMX_TILES_H_
