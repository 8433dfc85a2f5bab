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

// fn(std::integral_constant<int, tokens>{}) for 1 ≤ tokens ≤ MaxTokens: all of a call's tokens as
// one tile whose size the kernel takes as a template argument (decltype(tile)::value).
template <int MaxTokens, typename Fn>
inline void WithTokenCount(int64_t tokens, Fn&& fn) {
  token_tiles_internal::WithTileSize(tokens, fn, std::make_integer_sequence<int, MaxTokens>());
}

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

// A call's rows [0, rows) in groups of `group_rows`, read as S parts side by side (the dots of
// one to a few tokens with more than one stream per thread): the groups are split into S runs of
// groups / S each, and run_parts(first_rows) is called for each position in a run, first_rows[s]
// the first row of part s's group there (the last group overall may be short: rows −
// first_rows[s] < group_rows); then run_one(first_row, group_size) for the groups left over
// (fewer than S). Each part is one contiguous run of the call's weights, so a thread reads S long
// streams at once rather than one.
template <int S, typename RunParts, typename RunOne>
inline void ForEachRowPart(int64_t rows, int group_rows, RunParts&& run_parts, RunOne&& run_one) {
  const int64_t groups = (rows + group_rows - 1) / group_rows, per_part = groups / S;
  for (int64_t g = 0; g < per_part; ++g) {
    int64_t first_rows[S];
    for (int s = 0; s < S; ++s) first_rows[s] = (g + s * per_part) * group_rows;
    run_parts(first_rows);
  }
  for (int64_t r0 = S * per_part * group_rows; r0 < rows; r0 += group_rows) {
    run_one(r0, static_cast<int>(rows - r0 < group_rows ? rows - r0 : group_rows));
  }
}

}  // namespace moe

#endif  // MOE_COMMON_KERNELS_TOKEN_TILES_H_
