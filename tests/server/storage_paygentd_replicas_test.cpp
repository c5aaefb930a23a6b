// Two real paygentd replicas (`paygentd --database postgresql://...`) on one PostgreSQL database,
// over loopback HTTP: a batch retried through the other replica counts once, each serves what the
// other wrote, one survives the other's kill -9, and both come back after PostgreSQL restarts.
#include <doctest/doctest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tests/server/fixture.h"
#include "tests/server/storage_backends.h"
#include "tests/support/paygentd_process.h"

namespace paygent::server::test {
namespace {

using paygent::testing::HttpClient;
using paygent::testing::PaygentdProcess;

constexpr char kAdmin[] = "replica-admin";

TEST_CASE("server.storage_paygentd_replicas_share_one_postgresql") {
#ifndef PAYGENT_WITH_POSTGRES
  static_cast<void>(postgres_backend_or_skip());
#else
  std::string why;
  paygent::testing::PostgresProcess* server = shared_postgres(why);
  if (server == nullptr) {
    std::printf("SKIPPED: PostgreSQL tests: %s\n", why.c_str());
    return;
  }
  PostgresBackend backend(*server);
  const std::string conninfo = backend.new_database();
  auto start = [&] {
    return PaygentdProcess::start({.admin_token = kAdmin, .extra_args = {"--database", conninfo}});
  };
  auto one = start();
  auto two = start();
  HttpClient http_one(one->port());
  HttpClient http_two(two->port());
  const std::string key = paygent::testing::create_product(http_one, kAdmin, "acme");

  std::vector<TestEvent> events;
  const std::int64_t now = absl::ToUnixNanos(absl::Now());  // in paygentd's current period
  for (int i = 0; i < 50; ++i) {
    events.push_back({.id = event_id(i, 9), .user_id = "user-" + std::to_string(i % 5), .ts_ns = now});
  }
  const std::string batch = batch_json(events);
  auto reply = http_one.request("POST", "/api/v1/events:batch", batch, key);
  REQUIRE(reply.has_value());
  CHECK_MESSAGE(reply->status == 200, reply->body);
  CHECK(reply->body.find(R"("accepted":50,"duplicates":0)") != std::string::npos);
  // The answer was lost, say: the syncer retries through the other replica.
  reply = http_two.request("POST", "/api/v1/events:batch", batch, key);
  REQUIRE(reply.has_value());
  CHECK(reply->body.find(R"("accepted":0,"duplicates":50)") != std::string::npos);
  // The other replica serves the user the first one created on the fly.
  reply = http_two.request("GET", "/api/v1/users/user-1/usage", {}, key);
  REQUIRE(reply.has_value());
  CHECK_MESSAGE(reply->status == 200, reply->body);
  CHECK_MESSAGE(reply->body.find(R"("calls":10)") != std::string::npos, reply->body);

  // One replica dies: the other goes on.
  one->kill_hard();
  reply = http_two.request("POST", "/api/v1/events:batch", batch_json({{.id = event_id(1000, 9)}}), key);
  REQUIRE(reply.has_value());
  CHECK(reply->status == 200);

  // PostgreSQL restarts: the replica's pooled connections are dead; its next request reconnects.
  server->restart();
  reply = http_two.request("POST", "/api/v1/events:batch", batch_json({{.id = event_id(1001, 9)}}), key);
  REQUIRE(reply.has_value());
  CHECK_MESSAGE(reply->status == 200, reply->body);
  CHECK(reply->body.find(R"("accepted":1,"duplicates":0)") != std::string::npos);
  auto three = start();  // a replica started afterwards sees everything
  HttpClient http_three(three->port());
  reply = http_three.request("GET", "/api/v1/reports/usage?from_ns=0&to_ns=9223372036854775807&group_by=model", {}, key);
  REQUIRE(reply.has_value());
  CHECK_MESSAGE(reply->body.find(R"("calls":52)") != std::string::npos, reply->body);
#endif
}

}  // namespace
}  // namespace paygent::server::test
