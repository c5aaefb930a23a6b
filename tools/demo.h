// The `paygent demo` command.
#pragma once

#include <string>

namespace paygent::tools {

struct DemoOptions {
  std::string store_path;  // local store of the guarded run; empty = memory only
  bool verbose = false;    // print every soft-gate warning as it fires
  // With both set, the guarded run also syncs to paygentd, and the backend's per-user totals for
  // the demo month are printed at the end beside the library's.
  std::string backend_url;
  std::string api_key;
};

// Runs the month twice and prints the comparison. Returns 0 when the story holds (Charlie's margin
// turns non-negative, he keeps working on gpt-4o-mini, light users are not rerouted, and with a
// backend every event is delivered and the backend's totals equal the library's), 1 otherwise.
int run_demo(const DemoOptions& options);

}  // namespace paygent::tools
