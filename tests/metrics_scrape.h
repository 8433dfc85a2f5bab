// Test helpers for the services' /metrics: start a server with --metrics_listen on loopback,
// scrape and parse it with the strict test parser (prometheus_text_parser.h), and read samples by
// their labels. Header-only, for the end-to-end tests.
#ifndef MOE_TESTS_METRICS_SCRAPE_H_
#define MOE_TESTS_METRICS_SCRAPE_H_

#include <httplib.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "gtest/gtest.h"
#include "testing/cluster.h"
#include "tests/prometheus_text_parser.h"

namespace moe::testing_metrics {

// A server started with --metrics_listen=127.0.0.1:0; `metrics_port` read from its port file
// (written before the gRPC port, which StartServer waited for).
struct Metered {
  testing::Server server;
  int metrics_port = 0;
};

inline Metered StartMetered(const std::string& binary, std::vector<std::string> args,
                            const std::string& port_file) {
  args.push_back("--metrics_listen=127.0.0.1:0");
  args.push_back("--metrics_port_file=" + port_file);
  Metered m;
  m.server = testing::MustStart(binary, std::move(args));
  std::ifstream in(port_file);
  std::string text;
  EXPECT_TRUE(in >> text && absl::SimpleAtoi(text, &m.metrics_port)) << port_file;
  return m;
}

// Scrapes and parses; fails the test on a malformed exposition.
inline std::map<std::string, testing_prom::Family> Scrape(int port) {
  httplib::Client client("127.0.0.1", port);
  httplib::Result result = client.Get("/metrics");
  EXPECT_TRUE(result) << httplib::to_string(result.error());
  if (!result) return {};
  EXPECT_EQ(result->status, 200);
  auto parsed = testing_prom::ParseText(result->body);
  EXPECT_TRUE(parsed.ok()) << parsed.status() << "\n" << result->body;
  std::map<std::string, testing_prom::Family> families;
  if (parsed.ok()) {
    for (testing_prom::Family& f : *parsed) families[f.name] = std::move(f);
  }
  return families;
}

// The samples `name` of `family` whose labels include `labels`.
inline std::vector<testing_prom::Sample> Matching(
    const std::map<std::string, testing_prom::Family>& families, const std::string& family,
    const std::string& name, const std::map<std::string, std::string>& labels) {
  auto it = families.find(family);
  if (it == families.end()) {
    ADD_FAILURE() << "no family " << family;
    return {};
  }
  std::vector<testing_prom::Sample> matching;
  for (const testing_prom::Sample& s : it->second.samples) {
    bool match = s.name == name;
    for (const auto& [k, v] : labels) {
      auto l = s.labels.find(k);
      match = match && l != s.labels.end() && l->second == v;
    }
    if (match) matching.push_back(s);
  }
  return matching;
}

// The value of the sample `name` whose labels include `labels`, summed over the matches.
inline double Sum(const std::map<std::string, testing_prom::Family>& families,
                  const std::string& family, const std::string& name,
                  const std::map<std::string, std::string>& labels = {}) {
  double sum = 0;
  for (const testing_prom::Sample& s : Matching(families, family, name, labels)) sum += s.value;
  return sum;
}

// The largest finite bucket bound ("le") of histogram `family`, or -1.
inline double LargestFiniteBound(const std::map<std::string, testing_prom::Family>& families,
                                 const std::string& family) {
  double largest = -1;
  auto it = families.find(family);
  if (it == families.end()) return largest;
  for (const testing_prom::Sample& s : it->second.samples) {
    auto le = s.labels.find("le");
    double bound = 0;
    if (s.name == family + "_bucket" && le != s.labels.end() && le->second != "+Inf" &&
        absl::SimpleAtod(le->second, &bound)) {
      largest = std::max(largest, bound);
    }
  }
  return largest;
}

}  // namespace moe::testing_metrics

#endif  // MOE_TESTS_METRICS_SCRAPE_H_
