// A strict parser of the Prometheus text exposition format 0.0.4, written for the tests from the
// format's specification and independently of common/metrics' writer, so that the tests check
// the writer against the format rather than against itself.
//
// Beyond the grammar (names, label escapes \\ \" \n only, values, optional timestamps, a final
// newline) it checks what a scraper relies on: at most one HELP and TYPE per family, TYPE before
// the family's samples, a family's lines contiguous, no duplicate series, sample names matching
// the TYPE (histograms: _bucket with le, _sum, _count), counters non-negative, and per histogram
// series: le strictly increasing and ending in +Inf, cumulative counts non-decreasing, _count
// equal to the +Inf bucket.
#ifndef MOE_TESTS_PROMETHEUS_TEXT_PARSER_H_
#define MOE_TESTS_PROMETHEUS_TEXT_PARSER_H_

#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace moe::testing_prom {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct Family {
  std::string name, help, type = "untyped";
  bool has_help = false, has_type = false;
  std::vector<Sample> samples;
};

namespace internal {

inline bool NameChar(char c, bool colon) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || (colon && c == ':');
}

// Reads a name at *pos; empty if none.
inline std::string ReadName(absl::string_view line, size_t* pos, bool colon) {
  const size_t start = *pos;
  if (*pos < line.size() && !absl::ascii_isdigit(static_cast<unsigned char>(line[*pos]))) {
    while (*pos < line.size() && NameChar(line[*pos], colon)) ++*pos;
  }
  return std::string(line.substr(start, *pos - start));
}

inline bool ParseValue(absl::string_view text, double* value) {
  if (text == "+Inf" || text == "Inf") {
    *value = HUGE_VAL;
    return true;
  }
  if (text == "-Inf") {
    *value = -HUGE_VAL;
    return true;
  }
  if (text == "NaN") {
    *value = NAN;
    return true;
  }
  if (text.empty()) return false;
  std::string s(text);
  char* end = nullptr;
  *value = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size() && std::isfinite(*value);
}

inline absl::Status Error(int line_no, absl::string_view what, absl::string_view line) {
  return absl::InvalidArgumentError(absl::StrCat("line ", line_no, ": ", what, ": ", line));
}

// The family a sample name belongs to, given the TYPEs seen.
inline std::string FamilyOf(const std::string& name, const std::map<std::string, Family>& fams) {
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    if (absl::EndsWith(name, suffix)) {
      std::string base = name.substr(0, name.size() - std::string(suffix).size());
      auto it = fams.find(base);
      if (it != fams.end() && it->second.type == "histogram") return base;
    }
  }
  return name;
}

inline absl::Status CheckHistogram(const Family& f) {
  // Group by the labels other than le.
  struct Series {
    std::vector<std::pair<double, double>> buckets;  // le, cumulative count
    bool has_sum = false, has_count = false;
    double count = 0;
  };
  std::map<std::map<std::string, std::string>, Series> series;
  for (const Sample& s : f.samples) {
    std::map<std::string, std::string> key = s.labels;
    key.erase("le");
    Series& se = series[key];
    if (s.name == f.name + "_bucket") {
      double le;
      if (!s.labels.count("le") || !ParseValue(s.labels.at("le"), &le)) {
        if (!s.labels.count("le") || s.labels.at("le") != "+Inf") {
          return absl::InvalidArgumentError(absl::StrCat(f.name, ": bucket without a valid le"));
        }
        le = HUGE_VAL;
      }
      se.buckets.push_back({le, s.value});
    } else if (s.name == f.name + "_sum") {
      se.has_sum = true;
    } else if (s.name == f.name + "_count") {
      se.has_count = true;
      se.count = s.value;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(f.name, ": histogram sample ", s.name));
    }
  }
  for (const auto& [key, se] : series) {
    if (se.buckets.empty() || !std::isinf(se.buckets.back().first) || !se.has_sum ||
        !se.has_count) {
      return absl::InvalidArgumentError(
          absl::StrCat(f.name, ": histogram series lacks +Inf bucket, _sum or _count"));
    }
    for (size_t i = 1; i < se.buckets.size(); ++i) {
      if (!(se.buckets[i].first > se.buckets[i - 1].first) ||
          se.buckets[i].second < se.buckets[i - 1].second) {
        return absl::InvalidArgumentError(absl::StrCat(f.name, ": buckets out of order"));
      }
    }
    if (se.count != se.buckets.back().second) {
      return absl::InvalidArgumentError(absl::StrCat(f.name, ": _count != +Inf bucket"));
    }
  }
  return absl::OkStatus();
}

}  // namespace internal

// The families in order of first appearance.
inline absl::StatusOr<std::vector<Family>> ParseText(absl::string_view text) {
  using namespace internal;
  if (!text.empty() && text.back() != '\n') {
    return absl::InvalidArgumentError("exposition does not end with a newline");
  }
  std::map<std::string, Family> families;
  std::vector<std::string> order;
  std::set<std::string> closed;  // families whose lines have ended
  std::set<std::string> series_seen;
  std::string current;
  auto enter = [&](const std::string& fam) -> bool {
    if (fam == current) return true;
    if (closed.count(fam)) return false;
    if (!current.empty()) closed.insert(current);
    current = fam;
    if (!families.count(fam)) {
      families[fam].name = fam;
      order.push_back(fam);
    }
    return true;
  };
  int line_no = 0;
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  if (!lines.empty()) lines.pop_back();  // after the final newline
  for (absl::string_view line : lines) {
    ++line_no;
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::vector<absl::string_view> parts = absl::StrSplit(line, absl::MaxSplits(' ', 3));
      if (parts.size() < 3 || (parts[1] != "HELP" && parts[1] != "TYPE")) continue;  // comment
      const std::string name(parts[2]);
      size_t p = 0;
      if (ReadName(name, &p, true) != name || name.empty()) {
        return Error(line_no, "bad metric name", line);
      }
      if (!enter(name)) return Error(line_no, "family not contiguous", line);
      Family& f = families[name];
      const std::string rest = parts.size() > 3 ? std::string(parts[3]) : "";
      if (parts[1] == "HELP") {
        if (f.has_help) return Error(line_no, "second HELP", line);
        f.has_help = true;
        for (size_t i = 0; i < rest.size(); ++i) {
          if (rest[i] != '\\') {
            f.help += rest[i];
          } else if (i + 1 < rest.size() && (rest[i + 1] == '\\' || rest[i + 1] == 'n')) {
            f.help += rest[++i] == 'n' ? '\n' : '\\';
          } else {
            return Error(line_no, "bad escape in HELP", line);
          }
        }
      } else {
        if (f.has_type || !f.samples.empty()) return Error(line_no, "late or second TYPE", line);
        static const std::set<std::string> kTypes = {"counter", "gauge", "histogram", "summary",
                                                     "untyped"};
        if (!kTypes.count(rest)) return Error(line_no, "unknown type", line);
        f.has_type = true;
        f.type = rest;
      }
      continue;
    }
    size_t p = 0;
    Sample s;
    s.name = ReadName(line, &p, true);
    if (s.name.empty()) return Error(line_no, "bad metric name", line);
    std::string series_key = s.name;
    if (p < line.size() && line[p] == '{') {
      ++p;
      while (p < line.size() && line[p] != '}') {
        const std::string label = ReadName(line, &p, false);
        if (label.empty() || absl::StartsWith(label, "__")) {
          return Error(line_no, "bad label name", line);
        }
        if (p + 1 >= line.size() || line[p] != '=' || line[p + 1] != '"') {
          return Error(line_no, "want =\" after label name", line);
        }
        p += 2;
        std::string value;
        for (;; ++p) {
          if (p >= line.size()) return Error(line_no, "unterminated label value", line);
          if (line[p] == '"') break;
          if (line[p] == '\\') {
            if (++p >= line.size()) return Error(line_no, "bad escape", line);
            if (line[p] == 'n') {
              value += '\n';
            } else if (line[p] == '\\' || line[p] == '"') {
              value += line[p];
            } else {
              return Error(line_no, "bad escape in label value", line);
            }
          } else {
            value += line[p];
          }
        }
        ++p;  // closing quote
        if (!s.labels.emplace(label, value).second) return Error(line_no, "duplicate label", line);
        if (p < line.size() && line[p] == ',') ++p;
      }
      if (p >= line.size()) return Error(line_no, "unterminated label set", line);
      ++p;  // '}'
      for (const auto& [k, v] : s.labels) absl::StrAppend(&series_key, "\x1f", k, "\x1e", v);
    }
    if (p >= line.size() || line[p] != ' ') return Error(line_no, "want a space", line);
    std::vector<absl::string_view> fields = absl::StrSplit(line.substr(p + 1), ' ');
    if (fields.empty() || fields.size() > 2 || !ParseValue(fields[0], &s.value)) {
      return Error(line_no, "bad value", line);
    }
    if (fields.size() == 2) {
      int64_t ts;
      if (!absl::SimpleAtoi(fields[1], &ts)) return Error(line_no, "bad timestamp", line);
    }
    if (!series_seen.insert(series_key).second) return Error(line_no, "duplicate series", line);
    const std::string fam = FamilyOf(s.name, families);
    if (!enter(fam)) return Error(line_no, "family not contiguous", line);
    Family& f = families[fam];
    if (f.type == "counter" && (s.name != fam || !(s.value >= 0))) {
      return Error(line_no, "counter sample must be the family name and >= 0", line);
    }
    if (f.type != "histogram" && s.labels.count("le") && f.type != "untyped") {
      return Error(line_no, "le outside a histogram", line);
    }
    f.samples.push_back(std::move(s));
  }
  std::vector<Family> result;
  for (const std::string& name : order) {
    if (families[name].type == "histogram") {
      if (absl::Status s = CheckHistogram(families[name]); !s.ok()) return s;
    }
    result.push_back(std::move(families[name]));
  }
  return result;
}

}  // namespace moe::testing_prom

#endif  // MOE_TESTS_PROMETHEUS_TEXT_PARSER_H_
