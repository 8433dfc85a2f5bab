#include "common/cli/human_units.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moe {

std::string CountOf(int64_t count, const std::string& singular, const std::string& plural) {
  return absl::StrCat(count, " ", count == 1 ? singular : plural);
}

std::string FormatBytes(int64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes) / 1024;
  int unit = 0;
  while (value >= 1024 && unit + 1 < 4) {
    value /= 1024;
    ++unit;
  }
  if (value >= 100) return absl::StrFormat("%.0f %s", value, kUnits[unit]);
  if (value >= 10) return absl::StrFormat("%.1f %s", value, kUnits[unit]);
  return absl::StrFormat("%.2f %s", value, kUnits[unit]);
}

}  // namespace moe
