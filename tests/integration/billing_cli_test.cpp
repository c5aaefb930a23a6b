// Billing through the real processes: paygentd, `paygent billing apply` (a metric, an agent and its
// pricing from one file, twice), billing events over HTTP, and `paygent invoice` in its three
// formats (docs/billing.md).
#include <doctest/doctest.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include "integration/cli_process.h"
#include "support/paygentd_process.h"

namespace paygent::testing {
namespace {

constexpr const char* kAdmin = "integration-admin-token";

void write_file(const std::string& path, const std::string& text) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  REQUIRE(f != nullptr);
  std::fputs(text.c_str(), f);
  std::fclose(f);
}

// A revenue-only billing event of gpu-agent's "inference" for customer c1 on 2026-11-17.
std::string job(int n, const std::string& hours) {
  char id[33];
  std::snprintf(id, sizeof id, "%032x", 0xb111 + n);
  return std::string(R"({"id":")") + id +
         R"(","user_id":"c1","session_id":"","agent_id":"gpu-agent","indicator":"inference","model":"","provider":"p",)"
         R"("input_tokens":0,"output_tokens":0,"cached_input_tokens":0,"cache_creation_input_tokens":0,)"
         R"("reasoning_tokens":0,"cost_nanos":0,"ts_ns":1794909600000000000,"meta_tags":{"hours":")" +
         hours + R"("},"estimated":false,"kind":"billing","audio_us":0,"cost_unknown":false})";
}

TEST_CASE("integration.billing_apply_and_invoice_through_the_cli") {
  TempDir dir;
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path() + "/server", .admin_token = kAdmin});
  HttpClient http(paygentd->port());
  const std::string key = create_product(http, kAdmin, "billing");
  const std::string url = paygentd->base_url();
  const std::string file = dir.path() + "/billing.json";
  write_file(file, R"({"metrics":[{"name":"GPU compute hours","identifier":"gpu_hours","aggregation":"sum","field":"hours"}],
    "agents":[{"agentId":"gpu-agent","name":"GPU","indicators":[{"indicator":"inference","metric":"gpu_hours",
      "pricing":{"model":"graduated","unit":"GPU-hour","tiers":[{"upTo":"50","unitPrice":"0.50"},{"unitPrice":"0.40","flatFee":"1"}]}}]}]})");

  CliRun r = run_cli({"billing", "apply", file, "--url", url, "--key", key});
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK(r.output ==
        "KIND    ID         RESULT\n"
        "metric  gpu_hours  changed\n"
        "agent   gpu-agent  changed\n");
  r = run_cli({"billing", "apply", file, "--url", url, "--key", key, "--format", "csv"});
  CHECK(r.output == "kind,id,result\nmetric,gpu_hours,unchanged\nagent,gpu-agent,unchanged\n");

  // Seed 003's jobs: 0.2 + 12 + 48 = 60.2 GPU-hours; graduated: 50 x 0.50 + 10.2 x 0.40 + 1 = 30.08.
  const auto reply = http.request("POST", "/api/v1/events:batch",
                                  "{\"v\":4,\"events\":[" + job(1, "0.2") + "," + job(2, "12") + "," + job(3, "48") + "," +
                                      job(4, "lots") + "]}",
                                  key);
  REQUIRE(reply.has_value());
  REQUIRE_MESSAGE(reply->status == 200, reply->body);

  r = run_cli({"invoice", "c1", "--period", "2026-11", "--url", url, "--key", key});
  REQUIRE(r.status == 0);
  CHECK(r.output ==
        "AGENT/INDICATOR      METRIC     PRICING    QUANTITY  AMOUNT  CREDITS  EVENTS  EXCLUDED\n"
        "gpu-agent/inference  gpu_hours  graduated      60.2  $30.08        0       3         1\n"
        "TOTAL                                                $30.08\n");
  r = run_cli({"invoice", "c1", "--period", "2026-11", "--format", "csv", "--url", url, "--key", key});
  CHECK(r.output ==
        "agent,indicator,metric,pricing,quantity,amount_usd,credits,events,excluded\n"
        "gpu-agent,inference,gpu_hours,graduated,60.2,30.08,0,3,1\n");
  r = run_cli({"invoice", "c1", "--period", "2026-11", "--format", "json", "--url", url, "--key", key});
  CHECK(r.output.find(R"("total_nanos":30080000000)") != std::string::npos);
  CHECK(r.output.find(R"("not_a_number":1)") != std::string::npos);

  // Refusals name what is wrong.
  r = run_cli({"invoice", "c1", "--period", "November", "--url", url, "--key", key});
  CHECK(r.status == 1);
  CHECK(r.output.find("period: must be a month as 2026-11") != std::string::npos);
  r = run_cli({"invoice", "--url", url});
  CHECK(r.status == 2);
  write_file(file, R"({"metrics":[{"name":"GPU compute hours","identifier":"gpu_hours","aggregation":"max","field":"hours"}]})");
  r = run_cli({"billing", "apply", file, "--url", url, "--key", key});
  CHECK(r.status == 1);
  CHECK(r.output.find("gpu-agent/inference") != std::string::npos);  // locked: linked to it
}

}  // namespace
}  // namespace paygent::testing
