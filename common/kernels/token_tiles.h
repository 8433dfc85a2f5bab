// How the dot kernels split a call's tokens into register tiles: at most `max_tile` tokens each,
// as even as possible (13 tokens in tiles of up to 12 run as 7 + 6, not 12 + 1), so that no tile
// re-reads the weight rows from cache for a token or two; and how they walk a call's rows in
// groups. Plain C++, included by the kernels of every instruction set.
#ifndef MOE_COMMON_KERNELS_TOKEN_TILES_H_
#define MOE_COMMON_KERNELS_TOKEN_TILES_H_

#include <cstdint>
#include <type_traits>
#include <utility>

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

namespace token_tiles_internal {
template <typename Fn, int... Ts>
inline void WithTileSize(int64_t size, Fn& fn, std::integer_sequence<int, Ts...>) {
  (void)((size == Ts + 1 ? (fn(std::integral_constant<int, Ts + 1>{}), true) : false) || ...);
}
}  // namespace token_tiles_internal

// Rows [0, rows) in groups of `group_rows` (the last one possibly shorter), each group's tokens in
// tiles as ForEachTokenTile splits them: calls run_tile(tile, first_row, group_size, first_token)
// with `tile` a std::integral_constant<int, T>, T ≤ MaxTile the tile's tokens, for kernels that
// take it as a template argument (decltype(tile)::value).
template <int MaxTile, typename RunTile>
inline void ForEachRowGroupTile(int64_t rows, int group_rows, int64_t tokens, RunTile&& run_tile) {
  for (int64_t r0 = 0; r0 < rows; r0 += group_rows) {
    const int n = static_cast<int>(rows - r0 < group_rows ? rows - r0 : group_rows);
    ForEachTokenTile(tokens, MaxTile, [&](int64_t first, int64_t size) {
      auto run = [&](auto tile) { run_tile(tile, r0, n, first); };
      token_tiles_internal::WithTileSize(size, run, std::make_integer_sequence<int, MaxTile>());
    });
  }
}

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_TOKEN_TILES_H_
