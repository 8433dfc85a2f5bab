// ParseFlags: absl::ParseCommandLine with a --help that helps.
//
// Abseil 20220623's --help lists only flags defined in a file named after the binary
// (moe_client.cc, not tools/client_main.cc), so every binary printed "No flags matched", and it
// exits 1. Here -h, --help and -help (anywhere before a bare "--") print the usage message set
// with absl::SetProgramUsageMessage, then every flag the binary itself defines (not Abseil's own
// --flagfile, --helpfull, ...) with its meaning and default, and exit 0. --helpfull, --helpshort
// and the other Abseil usage flags keep Abseil's behaviour, with --helpshort/--helppackage showing
// the same flags as --help. Call it once, first thing in main(); flags are only read in main.cc.
#ifndef MOE_COMMON_CLI_PARSE_FLAGS_H_
#define MOE_COMMON_CLI_PARSE_FLAGS_H_

#include <iosfwd>
#include <vector>

namespace moe {

// Parses argv as absl::ParseCommandLine does (exiting on unknown flags). Exits 0 after printing
// the help when asked for it, and 2 naming the first argument that is not a flag: no binary here
// takes any, and "--allow_partial false" would otherwise turn the flag on and drop the "false".
void ParseFlags(int argc, char** argv);

// True when -h, --help or -help comes before any bare "--": for binaries that parse their own
// arguments (the benchmarks) and print their usage then.
bool AsksForHelp(int argc, char** argv);

// Writes the help ParseFlags prints for --help: the usage message, then the binary's flags
// sorted by name, each with its default and meaning.
void PrintFlagsHelp(std::ostream& out);

}  // namespace moe

#endif  // MOE_COMMON_CLI_PARSE_FLAGS_H_
