// The `paygent` command line: the demo and plan checks.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

#include "paygent/paygent.h"
#include "tools/demo.h"

namespace {

constexpr const char* kUsage = R"(usage: paygent <command> [options]

commands:
  demo [--store FILE] [--verbose]
      The $49 Pro-plan month of three users (light, typical, power) calling a simulated LLM,
      run without and with Paygent. The guarded run keeps its events in a fresh local SQLite
      store (a temporary file unless --store names a file that does not exist yet).
      Exits 0 when the power user's margin is no longer negative.
  plan check FILE
      Parses and validates a plan config (JSON); prints the plans or the error with its field path.
  help
      This text.
)";

int plan_check(const char* path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "paygent plan check: cannot read %s\n", path);
    return 2;
  }
  const std::string json((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto config = paygent::parse_plan_config(json);
  if (!config.ok()) {
    std::fprintf(stderr, "%s: %s\n", path, std::string(config.status().message()).c_str());
    return 1;
  }
  std::printf("%s: %zu plan(s), hard gate at %.2f%%\n", path, config->plans.size(),
              static_cast<double>(config->hard_gate_at) / 10'000.0);
  for (const auto& p : config->plans) {
    std::printf("  %s: period %s, session %s, %zu model limit(s), %zu cost rate(s)\n", p.name.c_str(),
                p.max_spend_per_period ? paygent::format_usd(*p.max_spend_per_period).c_str() : "unlimited",
                p.max_spend_per_session ? paygent::format_usd(*p.max_spend_per_session).c_str() : "unlimited",
                p.model_limits.size(), p.cost_rates.size());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string_view cmd = argc > 1 ? argv[1] : "help";
  if (cmd == "demo") {
    paygent::tools::DemoOptions options;
    bool temporary = true;
    for (int i = 2; i < argc; ++i) {
      if (std::strcmp(argv[i], "--verbose") == 0) {
        options.verbose = true;
      } else if (std::strcmp(argv[i], "--store") == 0 && i + 1 < argc) {
        options.store_path = argv[++i];
        temporary = false;
      } else {
        std::fprintf(stderr, "paygent demo: unknown option %s\n%s", argv[i], kUsage);
        return 2;
      }
    }
    if (temporary) {
      options.store_path = (std::filesystem::temp_directory_path() /
                            ("paygent-demo-" + std::to_string(::getpid()) + ".db")).string();
    } else if (std::filesystem::exists(options.store_path)) {
      std::fprintf(stderr, "paygent demo: %s exists; the demo needs a fresh store\n", options.store_path.c_str());
      return 2;
    }
    const int rc = paygent::tools::run_demo(options);
    if (temporary) {
      for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(options.store_path + suffix);
    }
    return rc;
  }
  if (cmd == "plan" && argc == 4 && std::string_view(argv[2]) == "check") return plan_check(argv[3]);
  if (cmd == "help" || cmd == "--help" || cmd == "-h") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  std::fprintf(stderr, "paygent: unknown command\n%s", kUsage);
  return 2;
}
