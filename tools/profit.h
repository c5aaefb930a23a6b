// `paygent report profit` and `paygent agents apply` (see tools/paygent.cpp for the flags): the
// command line of paygentd's profit report and agents API (docs/tracking.md, "Revenue").
#pragma once

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace paygent::tools {

// Parses `paygent report profit`'s flags (argv[3] onwards), asks paygentd and prints the report:
// an aligned table (default), CSV or the reply's JSON. 0 on success, 1 when paygentd refuses or
// cannot be reached, 2 for bad flags (the message names the flag).
int run_report_profit(int argc, char** argv);

// Parses `paygent agents apply FILE` (argv[3] onwards) and sends the file's agents to paygentd
// (POST /api/v1/agents:apply); prints one line per agent, "changed" or "unchanged". Applying the
// same file again changes nothing. 0 on success, 1 when refused or unreachable, 2 for bad flags.
int run_agents_apply(int argc, char** argv);

// --url and --key of the commands that talk to paygentd, with PAYGENT_URL / PAYGENT_API_KEY as defaults.
struct Connection {
  std::string url = std::getenv("PAYGENT_URL") != nullptr ? std::getenv("PAYGENT_URL") : "http://127.0.0.1:8080";
  std::string key = std::getenv("PAYGENT_API_KEY") != nullptr ? std::getenv("PAYGENT_API_KEY") : "";
};

// The whole of file `path`, or nullopt after printing "<command>: cannot read PATH".
std::optional<std::string> read_input_file(const char* command, const std::string& path);

// paygentd's reply body when it answered 200 to `method` `target` with `body`; else nullopt after
// printing "<command>: [<context>: ]<the reply's body, or why it could not be reached>".
std::optional<std::string> ask_paygentd(const Connection& c, const char* command, const std::string& method,
                                        const std::string& target, const std::string& body, const std::string& context);

// A CSV field, quoted when it holds a comma, a quote or a newline.
std::string csv_field(std::string_view text);

// Prints `cells` as an aligned table: the first `left_columns` columns left-aligned (text), the
// others right-aligned (numbers); no trailing spaces.
void print_table(const std::vector<std::vector<std::string>>& cells, std::size_t left_columns = 1);

// nano-USD as dollars, exact, with at least two decimals: 750000000 -> "$0.75", 2500000 ->
// "$0.0025", -150000000 -> "-$0.15".
std::string usd_text(std::int64_t nanos);

// A margin in parts per million as a percentage with one decimal: 750000 -> "75.0%".
std::string margin_text(std::int64_t ppm);

}  // namespace paygent::tools
