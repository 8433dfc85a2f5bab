#include "tools/placement/expert_load.h"

#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace moe {
namespace {

bool ParseCount(absl::string_view text, double* value) {
  if (!absl::SimpleAtod(text, value)) return false;
  return std::isfinite(*value) && *value >= 0;
}

// Counts per expert id → a dense vector of num_experts (0 = from the largest id).
absl::StatusOr<std::vector<double>> Densify(const std::map<int, double>& counts, int num_experts,
                                            absl::string_view source) {
  if (counts.empty())
    return absl::InvalidArgumentError(absl::StrCat("no expert counts in ", source));
  constexpr int kMaxExpertId = 65535;  // config.json holds at most 65 536 experts
  const int largest = counts.rbegin()->first;
  if (num_experts < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--num_experts=", num_experts, ": expected 0 (one more than the largest id seen) or more"));
  }
  if (largest > kMaxExpertId) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, " counts expert ", largest, ": expert ids go up to ", kMaxExpertId));
  }
  if (num_experts == 0) num_experts = largest + 1;
  if (largest >= num_experts) {
    return absl::InvalidArgumentError(absl::StrCat(source, " counts expert ", largest,
                                                   " but the layer has ", num_experts, " experts"));
  }
  std::vector<double> load(num_experts, 0.0);
  for (const auto& [e, c] : counts) load[e] = c;
  return load;
}

struct PromSample {
  std::string name;
  std::map<std::string, std::string> labels;
  std::string value;
};

// `name{a="x",b="y"} value [timestamp]`; false if the line is not a sample.
bool ParseSampleLine(absl::string_view line, PromSample* out) {
  size_t p = 0;
  while (p < line.size() && line[p] != '{' && line[p] != ' ') ++p;
  out->name = std::string(line.substr(0, p));
  out->labels.clear();
  if (p < line.size() && line[p] == '{') {
    ++p;
    while (p < line.size() && line[p] != '}') {
      const size_t eq = line.find("=\"", p);
      if (eq == absl::string_view::npos) return false;
      std::string label(absl::StripAsciiWhitespace(line.substr(p, eq - p)));
      std::string value;
      for (p = eq + 2; p < line.size() && line[p] != '"'; ++p) {
        if (line[p] == '\\' && p + 1 < line.size()) {
          ++p;
          value += line[p] == 'n' ? '\n' : line[p];
        } else {
          value += line[p];
        }
      }
      if (p >= line.size()) return false;
      ++p;  // closing quote
      out->labels[label] = value;
      if (p < line.size() && line[p] == ',') ++p;
    }
    if (p >= line.size()) return false;
    ++p;  // '}'
  }
  std::vector<absl::string_view> rest =
      absl::StrSplit(absl::StripAsciiWhitespace(line.substr(p)), ' ', absl::SkipEmpty());
  if (rest.empty()) return false;
  out->value = std::string(rest[0]);
  return true;
}

}  // namespace

absl::StatusOr<std::vector<double>> ParseExpertCounts(absl::string_view text, int num_experts) {
  std::map<int, double> counts;
  bool first = true;
  int line_no = 0;
  for (absl::string_view raw : absl::StrSplit(text, '\n')) {
    ++line_no;
    absl::string_view line = absl::StripAsciiWhitespace(raw);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t,"), absl::SkipEmpty());
    int expert;
    double count;
    const bool numeric = fields.size() == 2 && absl::SimpleAtoi(fields[0], &expert);
    double unused;
    if (first && fields.size() == 2 && !absl::SimpleAtod(fields[0], &unused) &&
        !absl::SimpleAtod(fields[1], &unused)) {  // a header: "expert,count"
      first = false;
      continue;
    }
    first = false;
    if (!numeric || expert < 0 || !ParseCount(fields[1], &count)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "line ", line_no, ": want `expert count` (an id >= 0 and a count >= 0): ", line));
    }
    if (!counts.emplace(expert, count).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_no, ": expert ", expert, " is listed twice"));
    }
  }
  return Densify(counts, num_experts, "the counts file");
}

absl::StatusOr<std::vector<double>> ExpertLoadFromPrometheusText(absl::string_view text,
                                                                 absl::string_view metric,
                                                                 absl::string_view layer,
                                                                 int num_experts) {
  std::map<std::string, std::map<int, double>> by_layer;
  int line_no = 0;
  PromSample sample;
  for (absl::string_view raw : absl::StrSplit(text, '\n')) {
    ++line_no;
    absl::string_view line = absl::StripAsciiWhitespace(raw);
    if (line.empty() || line[0] == '#' || !absl::StartsWith(line, metric)) continue;
    if (!ParseSampleLine(line, &sample) || sample.name != metric) continue;
    int expert;
    double count;
    auto e = sample.labels.find("expert");
    if (e == sample.labels.end() || !absl::SimpleAtoi(e->second, &expert) || expert < 0 ||
        !ParseCount(sample.value, &count)) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_no, ": want ", metric, "{expert=\"ID\",...} COUNT: ", line));
    }
    auto l = sample.labels.find("layer");
    by_layer[l == sample.labels.end() ? "" : l->second][expert] += count;
  }
  if (by_layer.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("no ", metric, " samples found"));
  }
  std::vector<std::string> layers;
  for (const auto& [name, counts] : by_layer) layers.push_back(name);
  std::map<int, double> chosen;
  if (layer == "all") {
    for (const auto& [name, counts] : by_layer) {
      for (const auto& [expert, count] : counts) chosen[expert] += count;
    }
  } else if (layer.empty()) {
    if (by_layer.size() > 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          metric, " has layers ", absl::StrJoin(layers, ","), ": choose one with --layer, or all"));
    }
    chosen = by_layer.begin()->second;
  } else {
    auto it = by_layer.find(std::string(layer));
    if (it == by_layer.end()) {
      return absl::InvalidArgumentError(absl::StrCat(metric, " has no layer \"", layer,
                                                     "\"; it has ", absl::StrJoin(layers, ",")));
    }
    chosen = it->second;
  }
  return Densify(chosen, num_experts, metric);
}

}  // namespace moe
