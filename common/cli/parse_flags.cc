#include "common/cli/parse_flags.h"

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace moe {
namespace {

// Abseil's own flags (--flagfile, --undefok, --help*, ...) live in its sources; every other flag
// of our binaries is one of ours.
bool IsOwnFlagFile(absl::string_view filename) { return !absl::StrContains(filename, "absl/"); }

// Wraps `text` at about `width` columns, every line indented by `indent`.
void WriteWrapped(std::ostream& out, absl::string_view text, absl::string_view indent,
                  size_t width) {
  std::string line;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (!line.empty() && indent.size() + line.size() + 1 + word.size() > width) {
      out << indent << line << "\n";
      line.clear();
    }
    if (!line.empty()) line += ' ';
    line.append(word.data(), word.size());
  }
  if (!line.empty()) out << indent << line << "\n";
}

}  // namespace

bool AsksForHelp(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") return false;
    if (arg == "-h" || arg == "--help" || arg == "-help") return true;
  }
  return false;
}

void PrintFlagsHelp(std::ostream& out) {
  out << absl::ProgramUsageMessage() << "\n\nFlags:\n";
  std::vector<const absl::CommandLineFlag*> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (!flag->IsRetired() && IsOwnFlagFile(flag->Filename())) flags.push_back(flag);
  }
  std::sort(flags.begin(), flags.end(),
            [](const absl::CommandLineFlag* a, const absl::CommandLineFlag* b) {
              return a->Name() < b->Name();
            });
  for (const absl::CommandLineFlag* flag : flags) {
    std::string default_value = flag->DefaultValue();
    if (flag->IsOfType<std::string>()) default_value = "\"" + default_value + "\"";
    out << "  --" << flag->Name() << "  (default: " << default_value << ")\n";
    WriteWrapped(out, flag->Help(), "      ", 100);
  }
  out << "\n--helpfull also lists Abseil's own flags (--flagfile, --fromenv, ...).\n";
}

void ParseFlags(int argc, char** argv) {
  absl::FlagsUsageConfig config;
  config.contains_help_flags = IsOwnFlagFile;
  config.contains_helpshort_flags = IsOwnFlagFile;
  config.contains_helppackage_flags = IsOwnFlagFile;
  absl::SetFlagsUsageConfig(config);
  if (AsksForHelp(argc, argv)) {
    PrintFlagsHelp(std::cout);
    std::exit(0);
  }
  const std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) {
    std::cerr << argv[0] << ": unexpected argument '" << positional[1]
              << "': flags take the form --name=value (a boolean flag --name or --name=false)"
              << std::endl;
    std::exit(2);
  }
}

}  // namespace moe
