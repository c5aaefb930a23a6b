// Budget leases through the real paygentd over loopback HTTP: a lease is in the database, so it
// outlives a restart of paygentd on SQLite; two replicas on one PostgreSQL share the leases of a
// limit; --lease-ttl-ms sets the TTL and refuses a bad value.
#include <sys/wait.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include <doctest/doctest.h>
#include <simdjson.h>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tests/server/fixture.h"
#include "tests/server/storage_backends.h"
#include "tests/support/paygentd_process.h"

namespace paygent::server::test {
namespace {

using paygent::testing::HttpClient;
using paygent::testing::PaygentdProcess;
using paygent::testing::TempDir;

constexpr char kAdmin[] = "lease-admin";

// A total_spend lease request of one entry (cap 1000 over the current month; nothing used).
std::string lease_body(std::string_view holder, std::int64_t want, bool release = false) {
  const std::int64_t start = ns_at(2026, 1, 1);
  return std::string("{\"holder\":\"") + std::string(holder) +
         "\",\"leases\":[{\"user_id\":\"u1\",\"limit\":\"total_spend\",\"period_start_ns\":" + std::to_string(start) +
         ",\"period_end_ns\":" + std::to_string(start + 86'400'000'000'000 * 400) +
         ",\"cap\":1000,\"used\":0,\"acked\":0,\"want\":" + std::to_string(want) + ",\"need\":0,\"release\":" +
         (release ? "true" : "false") + "}]}";
}

struct Lease {
  std::int64_t ttl_ms = 0, granted = 0, ceiling = 0, held_elsewhere = 0, remaining = 0, holders = 0;
};

Lease ask(HttpClient& http, const std::string& key, std::string_view holder, std::int64_t want, bool release = false) {
  const auto reply = http.request("POST", "/api/v1/leases", lease_body(holder, want, release), key);
  REQUIRE(reply.has_value());
  REQUIRE_MESSAGE(reply->status == 200, reply->body);
  simdjson::dom::parser parser;
  simdjson::dom::element root = parse_json(parser, reply->body);
  return Lease{.ttl_ms = int_at(root, "/ttl_ms"),
               .granted = int_at(root, "/leases/0/granted"),
               .ceiling = int_at(root, "/leases/0/ceiling"),
               .held_elsewhere = int_at(root, "/leases/0/held_elsewhere"),
               .remaining = int_at(root, "/leases/0/remaining"),
               .holders = int_at(root, "/leases/0/holders")};
}

constexpr std::string_view kA = "aaaa0000000000000000000000000001";
constexpr std::string_view kB = "bbbb0000000000000000000000000002";

TEST_CASE("server.paygentd_lease_survives_a_restart_on_sqlite") {
  TempDir dir("paygentd-leases");
  std::string key;
  {
    auto paygentd = PaygentdProcess::start({.data_dir = dir.path(), .admin_token = kAdmin,
                                            .extra_args = {"--lease-ttl-ms", "600000"}});
    HttpClient http(paygentd->port());
    key = paygent::testing::create_product(http, kAdmin, "acme");
    const Lease a = ask(http, key, kA, 400);
    CHECK(a.ttl_ms == 600000);
    CHECK(a.ceiling == 400);
    // Unauthenticated through the real server too.
    CHECK(http.request("POST", "/api/v1/leases", lease_body(kB, 1), "nope")->status == 401);
    CHECK(paygentd->terminate() == 0);
  }
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path(), .admin_token = kAdmin,
                                          .extra_args = {"--lease-ttl-ms", "600000"}});
  HttpClient http(paygentd->port());
  // A's 400 are still held after the restart: B gets a fair share of the 600 left.
  const Lease b = ask(http, key, kB, 1000);
  CHECK(b.held_elsewhere == 400);
  CHECK(b.holders == 2);
  CHECK(b.granted == 300);
  // A's ceiling was kept too: asking for nothing more does not lower it.
  CHECK(ask(http, key, kA, 0).ceiling == 400);
  CHECK(paygentd->terminate() == 0);
}

TEST_CASE("server.paygentd_lease_ttl_flag") {
  TempDir dir("paygentd-lease-ttl");
  auto paygentd = PaygentdProcess::start({.data_dir = dir.path(), .admin_token = kAdmin,
                                          .extra_args = {"--lease-ttl-ms", "1000"}});
  HttpClient http(paygentd->port());
  const std::string key = paygent::testing::create_product(http, kAdmin, "acme");
  CHECK(ask(http, key, kA, 400).ttl_ms == 1000);
  CHECK(ask(http, key, kB, 0).held_elsewhere == 400);
  // A stops renewing: after one TTL its budget is free again.
  absl::SleepFor(absl::Milliseconds(1100));
  const Lease b = ask(http, key, kB, 1000);
  CHECK(b.held_elsewhere == 0);
  CHECK(b.holders == 1);
  CHECK(b.ceiling == 1000);
  CHECK(paygentd->terminate() == 0);

  const std::string binary = paygent::testing::paygentd_path();
  for (const char* bad : {"0", "-5", "86400001", "ten"}) {
    INFO(bad);
    const std::string command =
        binary + " --data-dir " + dir.path() + " --lease-ttl-ms " + bad + " >/dev/null 2>&1";
    const int status = std::system(command.c_str());
    CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 2));
  }
  FILE* pipe = ::popen((binary + " --help").c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string help;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) help.append(buf, n);
  ::pclose(pipe);
  CHECK(help.find("--lease-ttl-ms") != std::string::npos);
  CHECK(help.find("PAYGENTD_LEASE_TTL_MS") != std::string::npos);
}

TEST_CASE("server.paygentd_replicas_share_leases_on_one_postgresql") {
  const std::unique_ptr<StorageBackend> backend = postgres_backend_or_skip();
  if (backend == nullptr) return;
#ifdef PAYGENT_WITH_POSTGRES
  const std::string conninfo = static_cast<PostgresBackend&>(*backend).new_database();
  auto start = [&] {
    return PaygentdProcess::start({.admin_token = kAdmin, .extra_args = {"--database", conninfo}});
  };
  auto one = start();
  auto two = start();
  HttpClient http_one(one->port());
  HttpClient http_two(two->port());
  const std::string key = paygent::testing::create_product(http_one, kAdmin, "acme");
  CHECK(ask(http_one, key, kA, 700).ceiling == 700);
  // The other replica sees A's lease: B gets what is left, no more.
  const Lease b = ask(http_two, key, kB, 1000);
  CHECK(b.ttl_ms == 10000);  // the default
  CHECK(b.held_elsewhere == 700);
  CHECK(b.holders == 2);
  CHECK(b.granted == 150);  // ceil(300 / 2)
  // A releases through replica two; B, through replica one, then has the rest.
  CHECK(ask(http_two, key, kA, 0, true).holders == 1);
  const Lease b2 = ask(http_one, key, kB, 1000);
  CHECK(b2.held_elsewhere == 0);
  CHECK(b2.ceiling == 1000);
  CHECK(pg_query(conninfo, "SELECT COUNT(*) FROM leases") == "1");
  CHECK(pg_query(conninfo, "SELECT version FROM paygent_schema") == "12");
#endif
}

}  // namespace
}  // namespace paygent::server::test
