// The `paygent` command line: the demo, plan checks, the profit report and agents.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

#include "paygent/paygent.h"
#include "tools/capload.h"
#include "tools/demo.h"
#include "tools/demo_revenue.h"
#include "tools/loadgen.h"
#include "tools/billing.h"
#include "tools/profit.h"
#include "sync/syncer.h"

namespace {

constexpr const char* kUsage = R"(usage: paygent <command> [options]

commands:
  demo [--store FILE] [--verbose] [--backend URL --api-key KEY]
      The $49 Pro-plan month of three users (light, typical, power) calling a simulated LLM,
      run without and with Paygent. The guarded run keeps its events in a fresh local SQLite
      store (a temporary file unless --store names a file that does not exist yet).
      Exits 0 when the power user's margin is no longer negative. With --backend and --api-key
      the guarded run also syncs to paygentd and ends with the backend's per-user report for the
      demo month, compared with the library's; a difference exits 1 (use a fresh product).
  demo revenue --backend URL --api-key KEY
      The revenue half (issue 10): sends a month of four agents' events (a per-minute voice agent,
      a flat per-call agent, a cost-only internal agent, a revenue-only webhook; their prices from
      scripts/demo-agents.json, applied first) and checks paygentd's profit report by agent.
  admin create-product --backend URL --admin-token TOKEN --name NAME
      Creates a product on paygentd and prints its API key (shown once).
  loadgen --backend URL --api-key KEY --store FILE [--users N] [--calls N] [--prefix P]
          [--flush-interval-ms N] [--batch-size N] [--pace-us N] [--deliver-seconds N]
          [--no-flush] [--hang]
      Records metered calls through Paygent with a backend and delivers them; prints the ground
      truth (calls, cost per user) and the gate latency. For integration tests and load trials.
      --hang: then print "spooled events=N" once the local store holds every call, and wait to
      be killed (instead of delivering).
  capload --backend URL [--backend URL ...] --api-key KEY --store FILE --user ID --cap-usd AMOUNT
          [--pace-ms N] [--gated-in-a-row N] [--gate-pause-ms N] [--seconds N]
          [--deliver-seconds N] [--flush-interval-ms N] [--progress] [--no-leases]
      One application process spending $0.0075 a call (reserve, settle) for one user whose plan caps
      the month at AMOUNT, until it is gated hard N times in a row (default 10, 20 ms apart) or
      --seconds (default 30) pass; then delivers and prints one line: admitted=<calls>
      spend_nanos=<its ground truth> hard_gates=... delivered=all|partial. Several --backend: each
      connection goes to the first replica that accepts it (failover). --progress: a line
      "admitted n=<calls> spend_nanos=<spend>" after each call, once it is in the local store.
      --no-leases: without budget leases (today's behaviour). For the chaos test and cap trials.
  sync --backend URL --api-key KEY --store FILE [--deliver-seconds N]
      Delivers whatever an application's local store still holds (e.g. after a crash).
  report profit --from DAY --to DAY [--by agent|customer|indicator|model|day|tag:KEY]
                [--format table|csv|json] [--url URL] [--key KEY]
      Cost, revenue, profit and margin over [--from, --to) (days as 2026-11-01, UTC, or Unix ns)
      from paygentd, grouped --by (default agent; tag:KEY: by the value of meta tag KEY). "-" in the table (empty in CSV, null in JSON)
      is what was not recorded: a cost-only agent has no revenue, a revenue-only one no cost.
      --url and --key default to $PAYGENT_URL (else http://127.0.0.1:8080) and $PAYGENT_API_KEY.
  agents apply FILE [--url URL] [--key KEY]
      Creates or replaces the agents and indicators of FILE ({"agents": [{"agentId", "name",
      "indicators": [...]}]}, README "Agents, revenue and profit"); the same file again changes
      nothing. Agents not in FILE are left alone.
  billing apply FILE [--format table|csv|json] [--url URL] [--key KEY]
      Creates or updates the billable metrics and creates or replaces the agents, indicators and
      pricing of FILE ({"metrics": [...], "agents": [...]}, docs/billing.md); the same file again
      changes nothing. A linked metric's aggregation, field and filters cannot change (refused).
  invoice CUSTOMER [--period 2026-11] [--format table|csv|json] [--url URL] [--key KEY]
      The customer's invoice preview from paygentd: one line per agent indicator (metric,
      pricing, quantity, amount, credits, events counted and excluded) and the total. Without
      --period, the current period (the customer's subscription, else the UTC calendar month).
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
  if (cmd == "demo" && argc >= 3 && std::string_view(argv[2]) == "revenue") {
    std::string url, key;
    for (int i = 3; i + 1 < argc; i += 2) {
      if (std::string_view(argv[i]) == "--backend") url = argv[i + 1];
      else if (std::string_view(argv[i]) == "--api-key") key = argv[i + 1];
    }
    if (url.empty() || key.empty()) {
      std::fprintf(stderr, "paygent demo revenue: --backend and --api-key are required\n");
      return 2;
    }
    return paygent::tools::run_revenue_demo(url, key);
  }
  if (cmd == "demo") {
    paygent::tools::DemoOptions options;
    bool temporary = true;
    for (int i = 2; i < argc; ++i) {
      if (std::strcmp(argv[i], "--verbose") == 0) {
        options.verbose = true;
      } else if (std::strcmp(argv[i], "--store") == 0 && i + 1 < argc) {
        options.store_path = argv[++i];
        temporary = false;
      } else if (std::strcmp(argv[i], "--backend") == 0 && i + 1 < argc) {
        options.backend_url = argv[++i];
      } else if (std::strcmp(argv[i], "--api-key") == 0 && i + 1 < argc) {
        options.api_key = argv[++i];
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
  if (cmd == "admin" && argc >= 3 && std::string_view(argv[2]) == "create-product") {
    std::string backend = "http://127.0.0.1:8080", token, name = "default";
    for (int i = 3; i + 1 < argc; i += 2) {
      const std::string_view a = argv[i];
      if (a == "--backend") backend = argv[i + 1];
      else if (a == "--admin-token") token = argv[i + 1];
      else if (a == "--name") name = argv[i + 1];
    }
    auto reply = paygent::internal::http_exchange(backend, "POST", "/api/v1/products", token,
                                                  "{\"name\":\"" + name + "\"}");
    if (!reply.ok() || reply->status != 201) {
      std::fprintf(stderr, "paygent admin: %s\n",
                   reply.ok() ? reply->body.c_str() : std::string(reply.status().message()).c_str());
      return 1;
    }
    const auto at = reply->body.find("\"api_key\":\"");
    if (at == std::string::npos) {
      std::fprintf(stderr, "paygent admin: no api_key in %s\n", reply->body.c_str());
      return 1;
    }
    const auto start = at + 11;
    std::printf("%s\n", reply->body.substr(start, reply->body.find('"', start) - start).c_str());
    return 0;
  }
  if (cmd == "loadgen" || cmd == "sync") {
    paygent::tools::LoadgenOptions o;
    for (int i = 2; i < argc; ++i) {
      const std::string_view a = argv[i];
      auto value = [&]() -> const char* {
        if (i + 1 >= argc) {
          std::fprintf(stderr, "paygent %s: %s needs a value\n", argv[1], argv[i]);
          std::exit(2);
        }
        return argv[++i];
      };
      if (a == "--backend") o.backend_url = value();
      else if (a == "--api-key") o.api_key = value();
      else if (a == "--store") o.store_path = value();
      else if (a == "--prefix") o.user_prefix = value();
      else if (a == "--users") o.users = std::max(1L, std::atol(value()));
      else if (a == "--calls") o.calls = std::atol(value());
      else if (a == "--flush-interval-ms") o.flush_interval_ms = std::atoi(value());
      else if (a == "--batch-size") o.batch_size = static_cast<std::size_t>(std::atol(value()));
      else if (a == "--pace-us") o.pace_us = std::atoi(value());
      else if (a == "--deliver-seconds") o.deliver_seconds = std::atoi(value());
      else if (a == "--no-flush") o.no_flush = true;
      else if (a == "--hang") o.hang = true;
      else {
        std::fprintf(stderr, "paygent %s: unknown option %s\n%s", argv[1], argv[i], kUsage);
        return 2;
      }
    }
    if (o.api_key.empty() || o.store_path.empty()) {
      std::fprintf(stderr, "paygent %s: --api-key and --store are required\n", argv[1]);
      return 2;
    }
    return cmd == "loadgen" ? paygent::tools::run_loadgen(o) : paygent::tools::run_sync(o);
  }
  if (cmd == "report" && argc >= 3 && std::string_view(argv[2]) == "profit") return paygent::tools::run_report_profit(argc, argv);
  if (cmd == "agents" && argc >= 3 && std::string_view(argv[2]) == "apply") return paygent::tools::run_agents_apply(argc, argv);
  if (cmd == "billing" && argc >= 3 && std::string_view(argv[2]) == "apply") return paygent::tools::run_billing_apply(argc, argv);
  if (cmd == "invoice") return paygent::tools::run_invoice(argc, argv);
  if (cmd == "capload") return paygent::tools::run_capload(argc, argv);
  if (cmd == "plan" && argc == 4 && std::string_view(argv[2]) == "check") return plan_check(argv[3]);
  if (cmd == "help" || cmd == "--help" || cmd == "-h") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  std::fprintf(stderr, "paygent: unknown command\n%s", kUsage);
  return 2;
}
