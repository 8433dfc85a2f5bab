// How the dot kernels split a call's tokens into register tiles: at most `max_tile` tokens each,
// as even as possible (13 tokens in tiles of up to 12 run as 7 + 6, not 12 + 1), so that no tile
// re-reads the weight rows from cache for a token or two. Plain C++, included by the kernels of
// every instruction set.
#ifndef MOE_COMMON_KERNELS_TOKEN_TILES_H_
#define MOE_COMMON_KERNELS_TOKEN_TILES_H_

#include <cstdint>

namespace moe {

// Calls run_tile(first_token, tile_tokens) for each tile, in token order.
template <typename RunTile>
inline void ForEachTokenTile(int64_t tokens, int64_t max_tile, RunTile&& run_tile) {
  int64_t tiles = (tokens + max_tile - 1) / max_tile;
  for (int64_t first = 0; first < tokens; --tiles) {
    const int64_t size = (tokens - first + tiles - 1) / tiles;
    run_tile(first, size);
    first += size;
  }
}

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_TOKEN_TILES_H_
