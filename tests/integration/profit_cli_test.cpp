// The revenue half through the real processes: paygentd, `paygent agents apply` (the demo's
// agents file, twice), `paygent demo revenue` (a month of four agents' events through the batch
// path) and `paygent report profit` in its three formats, with null / "-" for what was not
// recorded.
#include <doctest/doctest.h>

#include <chrono>
#include <csignal>
#include <string>
#include <vector>

#include "integration/cli_process.h"
#include "support/paygentd_process.h"

namespace paygent::testing {
namespace {

constexpr const char* kAdmin = "integration-admin-token";

TEST_CASE("integration.profit_report_and_agents_through_the_cli") {
  TempDir dir;
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path() + "/server", .admin_token = kAdmin});
  HttpClient http(paygentd->port());
  const std::string key = create_product(http, kAdmin, "agents");
  const std::string url = paygentd->base_url();
  const std::string file = std::string(PAYGENT_SOURCE_DIR) + "/scripts/demo-agents.json";

  CliRun r = run_cli({"agents", "apply", file, "--url", url, "--key", key});
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK(r.output == "agent dental-clinic: changed\nagent lead-qualification: changed\nagent stripe-webhook: changed\n");
  r = run_cli({"agents", "apply", file, "--url", url, "--key", key});
  CHECK(r.output ==
        "agent dental-clinic: unchanged\nagent lead-qualification: unchanged\nagent stripe-webhook: unchanged\n");

  r = run_cli({"demo", "revenue", "--backend", url, "--api-key", key});
  REQUIRE(r.status == 0);
  CHECK(r.output.find("profit report matches") != std::string::npos);
  // Sent twice: the same event ids, so nothing is counted (or billed) again.
  REQUIRE(run_cli({"demo", "revenue", "--backend", url, "--api-key", key}).status == 0);

  r = run_cli({"report", "profit", "--from", "2026-11-01", "--to", "2026-12-01", "--by", "agent", "--url", url, "--key", key});
  REQUIRE(r.status == 0);
  CHECK(r.output ==
        "agent                   COST  REVENUE   PROFIT  MARGIN  EVENTS  NO PRICE\n"
        "dental-clinic        $0.5415    $0.75  $0.2085   27.8%       4         0\n"
        "internal-summarizer    $0.12        -        -       -       4         0\n"
        "lead-qualification   $0.0054    $0.60  $0.5946   99.1%       6         0\n"
        "stripe-webhook             -    $2.00        -       -       2         0\n"
        "TOTAL                $0.6669    $3.35  $2.6831   80.1%      16         0\n");
  r = run_cli({"report", "profit", "--from", "2026-11-01", "--to", "2026-12-01", "--by", "customer", "--format", "csv",
               "--url", url, "--key", key});
  CHECK(r.output ==
        "customer,cost_usd,revenue_usd,profit_usd,margin_percent,events,events_without_price\n"
        "acme,,1.00,,,1,0\n"
        "customer-123,0.5415,0.75,0.2085,27.8,4,0\n"
        "customer-456,0.0054,0.60,0.5946,99.1,6,0\n"
        "globex,,1.00,,,1,0\n"
        "ops,0.12,,,,4,0\n");
  r = run_cli({"report", "profit", "--from", "2026-11-01", "--to", "2026-12-01", "--by", "indicator", "--format", "json",
               "--url", url, "--key", key});
  CHECK(r.output.find(R"({"key":"","cost_nanos":666900000,"revenue_nanos":null,"profit_nanos":null,"margin_ppm":null)") !=
        std::string::npos);
  CHECK(r.output.find(R"({"key":"voice_call_completed","cost_nanos":null,"revenue_nanos":750000000)") != std::string::npos);

  // Bad flags and refusals name what is wrong.
  r = run_cli({"report", "profit", "--from", "November", "--to", "2026-12-01", "--url", url, "--key", key});
  CHECK(r.status == 2);
  CHECK(r.output.find("--from") != std::string::npos);
  r = run_cli({"report", "profit", "--from", "2026-11-01", "--to", "2026-12-01", "--by", "colour", "--url", url, "--key", key});
  CHECK(r.status == 1);
  CHECK(r.output.find("by: must be agent, customer, indicator, model, day or tag:<meta tag key>") != std::string::npos);
  const std::string bad = dir.path() + "/bad.json";
  {
    std::FILE* f = std::fopen(bad.c_str(), "w");
    REQUIRE(f != nullptr);
    std::fputs(R"({"agents":[{"agentId":"x","indicators":[{"indicator":"i","pricePerEvent":"-1"}]}]})", f);
    std::fclose(f);
  }
  r = run_cli({"agents", "apply", bad, "--url", url, "--key", key});
  CHECK(r.status == 1);
  CHECK(r.output.find("agents[0].indicators[0].pricePerEvent: must not be negative") != std::string::npos);
}

}  // namespace
}  // namespace paygent::testing
